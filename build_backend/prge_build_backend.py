"""PEP 517 backend: scikit-build-core, after checking that torch is importable.

prge is a torch extension compiled against the torch the user already has. Listing torch
in build-system.requires would make pip download a multi-GB torch into an isolated build
environment (and compile against a torch the user does not run), so the build stops at
once with what to install instead."""
from __future__ import annotations

import importlib.util

INSTALL_HINT = (
    "prge builds against the torch installed in your environment, without pip's build "
    "isolation:\n"
    "    pip install torch==2.13.0 scikit-build-core cmake ninja   # or the torch build you use\n"
    "    pip install --no-build-isolation .\n"
    "(C++ dependencies from Debian/Ubuntu: apt-get install libyaml-cpp-dev; "
    "scripts/install_deps.sh does all of this)")


def _require(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise SystemExit(f"prge: error: '{module}' is not importable in the build environment.\n"
                         + INSTALL_HINT)


_require("scikit_build_core")
from scikit_build_core import build as _backend  # noqa: E402
from scikit_build_core.build import *  # noqa: E402,F401,F403  (sdist hooks need no torch)


def _with_torch(hook):
    def checked(*args, **kwargs):
        _require("torch")
        return hook(*args, **kwargs)
    checked.__name__ = hook.__name__
    return checked


get_requires_for_build_wheel = _with_torch(_backend.get_requires_for_build_wheel)
get_requires_for_build_editable = _with_torch(_backend.get_requires_for_build_editable)
prepare_metadata_for_build_wheel = _with_torch(_backend.prepare_metadata_for_build_wheel)
prepare_metadata_for_build_editable = _with_torch(_backend.prepare_metadata_for_build_editable)
build_wheel = _with_torch(_backend.build_wheel)
build_editable = _with_torch(_backend.build_editable)

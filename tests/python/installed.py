"""Assets that scripts/install_deps.sh installs must be present when tests run under CI.

Locally a missing asset skips its test with the install step; under CI=true (where
.ci/run has just run the install script) the same absence fails the test, naming the
step, so a broken install cannot hide behind a green run with skips."""
from __future__ import annotations

import importlib
import os

import pytest

INSTALL_SCRIPT = "scripts/install_deps.sh"


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1")


def missing(what: str, install_step: str) -> None:
    """Skip (locally) or fail (under CI) because an installable asset is absent."""
    message = f"{what} is missing; {INSTALL_SCRIPT} installs it ({install_step})"
    if under_ci():
        pytest.fail(f"{message}; under CI=true an installed asset must be present", pytrace=False)
    pytest.skip(message)


def registered_model(name: str):
    """The converted directory of a registered real model (prge.models.REGISTERED); a missing
    package skips, or fails under CI when the install script installs it (opt-in models skip)."""
    from prge.models import REGISTERED, resolve_model

    model = REGISTERED[name]
    try:
        model.gguf()
    except FileNotFoundError:
        if model.default:
            missing(f"model '{name}'", model.install)
        pytest.skip(f"model '{name}' is installed on request only ({model.install})")
    installed_module("gguf", "pip install gguf")
    return resolve_model(name)


def installed_module(name: str, install_step: str):
    """importorskip for modules the install script installs."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        missing(f"Python module '{name}' ({e})", install_step)

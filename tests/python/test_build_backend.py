"""pip install . must not pull a multi-GB torch into an isolated build: the build backend
stops at once, with what to install, when torch is not importable where it builds."""
import importlib.util
import sys
from pathlib import Path

import pytest

from conftest import load_script

BACKEND = Path(__file__).resolve().parents[2] / "build_backend" / "prge_build_backend.py"


def load_backend():
    return load_script("build_backend/prge_build_backend.py", "prge_build_backend_under_test")


def test_build_without_torch_stops_with_the_install_hint(monkeypatch):
    backend = load_backend()
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real_find_spec(name, *a))
    for hook in (backend.get_requires_for_build_wheel, backend.prepare_metadata_for_build_wheel,
                 backend.build_wheel, backend.build_editable):
        with pytest.raises(SystemExit, match="pip install --no-build-isolation") as stop:
            hook("/nonexistent")
        assert "pip install torch==2.13.0" in str(stop.value)


def test_pyproject_does_not_require_torch_for_the_build():
    text = (BACKEND.parents[1] / "pyproject.toml").read_text()
    requires = text.split("[build-system]")[1].split("[project]")[0]
    assert "torch" not in requires.split("requires =")[1].split("\n")[0]
    assert 'build-backend = "prge_build_backend"' in requires


def test_build_with_torch_delegates_to_scikit_build_core():
    backend = load_backend()
    from scikit_build_core import build as skbuild

    assert backend.build_sdist is skbuild.build_sdist  # the sdist needs no torch
    assert callable(backend.get_requires_for_build_wheel) and "torch" in sys.modules

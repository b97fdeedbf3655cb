"""A run's output directory: written by one process at a time (a lock file), never holding
two runs' files at once, and finished only by a summary of the very config it stores."""
from __future__ import annotations

import difflib
import fcntl
from contextlib import contextmanager
from pathlib import Path

# Removed in this order when a directory is reused: the summary first, so that an interrupted
# clean-up can never leave a "finished" mark beside another run's files.
RUN_FILES = ("summary.json", "summary.json.tmp", "metrics.jsonl", "trained.safetensors", "config.yaml",
             "checkpoint.json", "checkpoint.safetensors")
LOCK_FILE = ".prge.lock"


class RunDirError(ValueError):
    """The output directory cannot take this run (another run's files, another process)."""


class RunInProgress(RunDirError):
    """Another process holds the directory's lock."""


def _check_resumable(out_dir: Path, config_yaml: str) -> None:
    if (out_dir / "summary.json").is_file():
        raise RunDirError(f"{out_dir}: the run finished; nothing to resume")
    if not (out_dir / "config.yaml").is_file():
        raise RunDirError(f"{out_dir}: no run to resume (no config.yaml)")
    stored, wanted = normalized((out_dir / "config.yaml").read_text()), normalized(config_yaml)
    if stored != wanted:
        raise RunDirError(f"{out_dir}: the run there has other settings (first difference: "
                          f"{first_difference(stored, wanted)}); resume needs the same config")


def resumable(out_dir: Path, config_yaml: str) -> bool:
    try:
        _check_resumable(Path(out_dir), config_yaml)
        return True
    except RunDirError:
        return False


def first_difference(stored: str, wanted: str) -> str:
    for line in difflib.unified_diff(stored.splitlines(), wanted.splitlines(), lineterm="", n=0):
        if line.startswith(("+", "-")) and not line.startswith(("+++", "---")):
            return line
    return ""


def normalized(config_yaml: str) -> str:
    """A config.yaml as this version writes it (keys added since get their defaults), with
    estimator.rng: auto written as the generator it resolves to on the config's device (and
    estimator), so a
    run stored before `auto` became the default (rng: torch on the CPU) is the same run."""
    from prge._core import ConfigError, parse_run_config

    try:
        config = parse_run_config(config_yaml)
    except ConfigError:
        return config_yaml
    lora_fa = config.estimator.kind != "mezo"  # resolve_noise_rng in csrc/prge/perturbation.cpp
    resolved = "counter" if config.model.device.startswith("cuda") and lora_fa else "torch"
    return config.to_yaml().replace("\n  rng: auto\n", f"\n  rng: {resolved}\n")


def finished(out_dir: str | Path, config_yaml: str) -> bool:
    """True when the directory holds a finished run of this config; a finished run of other
    settings is an error naming the first difference."""
    out_dir = Path(out_dir)
    if not (out_dir / "summary.json").is_file():
        return False
    stored = normalized((out_dir / "config.yaml").read_text()) if (out_dir / "config.yaml").is_file() else ""
    config_yaml = normalized(config_yaml)
    if stored == config_yaml:
        return True
    raise RunDirError(f"{out_dir} holds a finished run of other settings (first difference: "
                      f"{first_difference(stored, config_yaml) or 'no config.yaml'}); run into another "
                      "--output-root, or delete that directory")


@contextmanager
def claim(out_dir: str | Path, config_yaml: str, overwrite: bool = False, resume: bool = False):
    """Lock the directory for this process, clear another run's files (only with overwrite),
    write config.yaml, and yield the directory. With resume, the directory must hold an
    unfinished run of this very config, and nothing is cleared."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise RunDirError(f"run.output_dir: {out_dir} is a file, not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        lock = open(out_dir / LOCK_FILE, "w")
    except OSError as e:
        raise RunDirError(f"run.output_dir: cannot write {out_dir} ({e.strerror})") from e
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise RunInProgress(f"run.output_dir: another prge process is writing {out_dir}") from e
        if resume:
            _check_resumable(out_dir, config_yaml)
            yield out_dir
            return
        present = [name for name in RUN_FILES if (out_dir / name).exists()]
        if present and not overwrite:
            raise RunDirError(f"run.output_dir: {out_dir} holds another run ({', '.join(present)}); "
                              "pass --overwrite to replace it, or choose another run.output_dir")
        for name in present:
            (out_dir / name).unlink()
        (out_dir / "config.yaml").write_text(config_yaml)
        yield out_dir
    finally:
        lock.close()  # releases the lock

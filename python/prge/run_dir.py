"""A run's output directory: written by one process at a time (a lock file), never holding
two runs' files at once, never inside a directory the run reads (its model), and finished
only by a summary of the very config it stores. The directories other commands write
(exports, merged models) are checked here too: empty or new unless --overwrite, and apart from
what they read."""
from __future__ import annotations

import fcntl
import json
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path

from prge import durable
from prge.whitespace import visible

# Removed in this order when a directory is reused: the summary first, so that an interrupted
# clean-up can never leave a "finished" mark beside another run's files.
RUN_FILES = ("summary.json", "summary.json.tmp", "metrics.jsonl", "metrics.jsonl.tmp", "trained.safetensors",
             "trained.safetensors.tmp", "config.yaml", "config.yaml.tmp", "checkpoint.json", "checkpoint.json.tmp",
             "checkpoint.safetensors", "checkpoint.safetensors.tmp")
# Directories a run writes: checkpoints (prge.checkpoints) and `prge train --runtime` exports.
RUN_DIRECTORIES = re.compile(r"^(checkpoint-\d+(\.tmp)?|export_(onnx|aoti|executorch))$")
LOCK_FILE = ".prge.lock"
# Why a sweep's run failed (mark_failed), for `prge report`; removed when a run claims the directory.
FAILED_FILE = ".prge.failed"


def shown(path: str | Path) -> str:
    """A run's path as messages give it: one that starts with ~ after the config reader expanded
    ~ (so a folder named ~ here, written ./~/x) keeps its ./, which pathlib drops."""
    text = str(path)
    return "./" + text if text.startswith("~") else text


class RunDirError(ValueError):
    """The output directory cannot take this run (another run's files, another process)."""


class RunInProgress(RunDirError):
    """Another process holds the directory's lock."""


def _check_resumable(out_dir: Path, config_yaml: str) -> None:
    if (out_dir / "summary.json").is_file():
        raise RunDirError(f"{shown(out_dir)}: the run finished; nothing to resume")
    if not (out_dir / "config.yaml").is_file():
        raise RunDirError(f"{shown(out_dir)}: no run to resume (no config.yaml)")
    stored, wanted = normalized((out_dir / "config.yaml").read_text()), normalized(config_yaml)
    if stored != wanted:
        raise RunDirError(f"{shown(out_dir)}: the run there has other settings (first difference: "
                          f"{first_difference(stored, wanted)}); resume needs the same config")


def resumable(out_dir: Path, config_yaml: str) -> bool:
    try:
        _check_resumable(Path(out_dir), config_yaml)
        return True
    except RunDirError:
        return False


def keyed(value) -> dict[str, str]:
    """A config's to_yaml() text (block mappings, two spaces a level) or a flat mapping as
    {dotted key: value text}; a line that is not `key: value` keeps its text under its parent."""
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    out, path = {}, []  # path: (indent, key) of the mappings the line is inside
    for line in value.split("\n"):  # not splitlines(): to_yaml writes U+2028, \x1c and such as they are
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        while path and path[-1][0] >= indent:
            path.pop()
        key, colon, rest = line.strip().partition(":")
        if not colon:  # a list item or a continued scalar
            parent = ".".join(k for _, k in path)
            out[parent] = f"{out.get(parent, '')} {line.strip()}".strip()
            continue
        dotted = ".".join([k for _, k in path] + [key.strip()])
        out[dotted] = rest.strip()
        path.append((indent, key.strip()))
    return out


def keyed_difference(a, b) -> tuple[str, str, str]:
    """(dotted key, a's value, b's value) of the first key whose values differ between two
    configs (keyed); '(absent)' for a key one lacks."""
    mine, theirs = keyed(a), keyed(b)
    for key in list(mine) + [k for k in theirs if k not in mine]:
        if mine.get(key) != theirs.get(key):
            return key, mine.get(key, "(absent)"), theirs.get(key, "(absent)")
    return "(the texts differ)", "", ""


def first_difference(stored: str, wanted: str) -> str:
    """'KEY: VALUE in the run there, VALUE now' for the first setting a run's stored config.yaml
    and this one give differently, control characters and whitespace other than a space escaped
    (a no-break space looked like a space)."""
    key, before, now = map(visible, keyed_difference(stored, wanted))
    return f"{key}: {before or '(empty)'} in the run there, {now or '(empty)'} now"


# Run settings that change how a run's checkpoints are stored, never a number the run produces
# (a resume from either checkpoint format is checked bit for bit: prge.checkpoints): runs that
# differ only in them are one run to a sweep (normalized) and seeds of one method to a report.
STORAGE_SETTINGS = ("checkpoint_format",)


# The settings that name a file or directory (model.name may also be a registered name).
PATH_SETTINGS = ("model.name", "adapter.init_from", "data.data_dir", "data.train_file", "data.eval_file")


def _setting(config, key: str) -> str:
    section, name = key.split(".")
    return str(getattr(getattr(config, section), name))


def _normpath(path: str) -> str:
    """os.path.normpath's spelling of a relative or absolute path, kept from starting with ~ (the
    config reader takes a leading ~ for the home directory: ./~/data is a folder named ~ here)."""
    spelled = os.path.normpath(path)
    return f"./{spelled}" if spelled.startswith("~") else spelled


def normalized(config_yaml: str, strict: bool = False) -> str:
    """A config.yaml as this version writes it (keys added since get their defaults), its paths
    (PATH_SETTINGS) as os.path.normpath writes them, with estimator.rng: auto written as the
    generator it resolves to on the config's device (and estimator), so a run stored before `auto`
    became the default (rng: torch on the CPU) is the same run, and without STORAGE_SETTINGS. A
    text this version does not read comes back as it is, or raises its ConfigError if `strict`."""
    from prge._core import ConfigError, parse_run_config

    try:
        config = parse_run_config(config_yaml)
        # paths spelled two ways name one file ("./adapter" and "adapter"): as os.path.normpath writes them
        spelled = [(key, value) for key in PATH_SETTINGS if (value := _setting(config, key))]
        if any(_normpath(value) != value for _, value in spelled):
            config = parse_run_config(config_yaml, "config.yaml", [(k, json.dumps(_normpath(v))) for k, v in spelled])
    except ConfigError:
        if strict:
            raise
        return config_yaml
    from prge._core import cuda_built

    # resolve_noise_rng in csrc/prge/perturbation.cpp: MeZO takes the counter RNG on CUDA where its kernels are built
    lora_fa = config.estimator.kind != "mezo"
    resolved = "counter" if config.model.device.startswith("cuda") and (lora_fa or cuda_built) else "torch"
    text = config.to_yaml().replace("\n  rng: auto\n", f"\n  rng: {resolved}\n")
    section, kept = None, []
    for line in text.split("\n"):  # not splitlines(): a value may hold U+2028, \x1c and such as they are
        if line[:1] not in (" ", ""):
            section = line.split(":", 1)[0]
        if not (section == "run" and line.startswith("  ") and line.strip().split(":", 1)[0] in STORAGE_SETTINGS):
            kept.append(line)
    return "\n".join(kept)


def finished(out_dir: str | Path, config_yaml: str) -> bool:
    """True when the directory holds a finished run of this config; a finished run of other
    settings is an error naming the first difference."""
    from prge._core import ConfigError

    out_dir = Path(out_dir)
    if not (out_dir / "summary.json").is_file():
        return False
    stored = (out_dir / "config.yaml").read_text() if (out_dir / "config.yaml").is_file() else ""
    try:
        stored = normalized(stored, strict=True) if stored else ""
    except ConfigError as e:  # compared as text, it would name some other line as the difference
        raise RunDirError(f"{shown(out_dir)} holds a finished run whose config.yaml this version does not read "
                          f"({e}); run into another --output-root, or delete that directory") from None
    config_yaml = normalized(config_yaml)
    if stored == config_yaml:
        return True
    raise RunDirError(f"{shown(out_dir)} holds a finished run of other settings (first difference: "
                      f"{first_difference(stored, config_yaml) if stored else 'no config.yaml'}); run into another "
                      "--output-root, or delete that directory")


def held_by_another(out_dir: str | Path) -> bool:
    """Whether another process holds the run directory's lock (claim): a run in progress."""
    path = Path(out_dir) / LOCK_FILE
    try:
        with open(path, "r") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(lock, fcntl.LOCK_UN)
    except OSError:  # no lock file: no run has claimed the directory
        pass
    return False


def mark_failed(out_dir: str | Path, message: str) -> None:
    """Writes FAILED_FILE in a sweep's run directory, holding `message` (why the run failed), so
    that `prge report` names the run as failed, not as not started (a run that fails while loading
    its data has written nothing else there). A directory holding a finished run, files prge does
    not write, or a run another process is writing is left alone; a write that fails is a note on
    stderr, never a second error."""
    out_dir = Path(out_dir)
    if held_by_another(out_dir):  # its run is in progress there, not failed
        return
    try:
        if out_dir.is_dir():
            ours, others = _run_entries(out_dir)
            if others or "summary.json" in ours:
                return
        out_dir.mkdir(parents=True, exist_ok=True)
        durable.write_text(out_dir / FAILED_FILE, message.rstrip("\n") + "\n")
    except OSError as e:
        print(f"[prge] note: cannot record the failure in {shown(out_dir)} ({e})", file=sys.stderr)


def failure_of(out_dir: str | Path) -> str | None:
    """The first line of a run directory's failure mark (mark_failed), or None without one."""
    path = Path(out_dir) / FAILED_FILE
    if not path.is_file():
        return None
    try:
        return (path.read_text(errors="replace").splitlines() or [""])[0]
    except OSError as e:
        return f"(its {FAILED_FILE} is unreadable: {e.strerror})"


def _inside(path: Path, directory: Path) -> bool:
    """Whether `path` is `directory` or lies inside it, after resolving links."""
    path, directory = Path(path).resolve(), Path(directory).resolve()
    return path == directory or directory in path.parents


def check_apart(out: str | Path, option: str, reads: dict[str, str | Path]) -> None:
    """`out` (written by `option`) is not, and is not inside, any directory the command reads
    (reads: what -> directory); RunDirError naming both."""
    for what, directory in reads.items():
        if directory and _inside(Path(out), Path(directory)):
            where = "is" if Path(out).resolve() == Path(directory).resolve() else "lies inside"
            raise RunDirError(f"{option}: {shown(out)} {where} {what} {directory}, which this command reads; "
                              "write somewhere else")


def check_output_dir(out: str | Path, option: str, overwrite: bool, reads: dict[str, str | Path]) -> Path:
    """A directory an export writes: new or empty, unless `overwrite`, and apart from what the
    command reads."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{option}: {shown(out)} is a file, not a directory")
    check_apart(out, option, reads)
    present = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if present and not overwrite:
        listed = ", ".join(map(visible, present[:8])) + (f", ... ({len(present)} entries)" if len(present) > 8 else "")
        raise RunDirError(f"{option}: {shown(out)} is not empty ({listed}); choose a new or empty directory, or pass "
                          "--overwrite to replace what is there")
    return out


def _run_entries(out_dir: Path) -> tuple[list[str], list[str]]:
    """(this kind of run's entries, others) in a run directory."""
    ours, others = [], []
    for path in out_dir.iterdir():
        if path.name in (LOCK_FILE, FAILED_FILE):
            continue
        (ours if path.name in RUN_FILES or RUN_DIRECTORIES.match(path.name) else others).append(path.name)
    order = {name: i for i, name in enumerate(RUN_FILES)}
    return sorted(ours, key=lambda n: (order.get(n, len(order)), n)), sorted(others)


def _check_claimable(out_dir: Path, config_yaml: str, overwrite: bool, resume: bool) -> list[str]:
    """claim's refusals (RunDirError); the run files it would replace."""
    if resume:
        _check_resumable(out_dir, config_yaml)
        return []
    present, foreign = _run_entries(out_dir)
    if present and not overwrite:
        what = "an export" if all(RUN_DIRECTORIES.match(n) and n.startswith("export_") for n in present) else "another run"
        raise RunDirError(f"run.output_dir: {shown(out_dir)} holds {what} ({', '.join(map(visible, present))}); "
                          "pass --overwrite to replace it, or choose another run.output_dir")
    if foreign and not overwrite:
        listed = ", ".join(map(visible, foreign[:8])) + (f", ... ({len(foreign)} entries)" if len(foreign) > 8 else "")
        raise RunDirError(f"run.output_dir: {shown(out_dir)} holds files prge did not write there ({listed}); "
                          "choose another run.output_dir, or pass --overwrite to write beside them")
    return present


@contextmanager
def claim(out_dir: str | Path, config_yaml: str, overwrite: bool = False, resume: bool = False,
          reads: dict[str, str | Path] | None = None):
    """Lock the directory for this process, clear another run's files (only with overwrite),
    write config.yaml, and yield the directory. With resume, the directory must hold an
    unfinished run of this very config, and nothing is cleared. `reads` (what -> directory,
    e.g. the model directory): directories the run reads, which it never writes into. Files
    prge does not write there are refused unless overwrite (and then left alone)."""
    out_dir = Path(out_dir)
    check_apart(out_dir, "run.output_dir", reads or {})
    if out_dir.exists() and not out_dir.is_dir():
        raise RunDirError(f"run.output_dir: {shown(out_dir)} is a file, not a directory")
    created = [d for d in (out_dir, *out_dir.parents) if not d.exists()]  # what a refused claim removes again
    lock_existed = (out_dir / LOCK_FILE).exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        lock = open(out_dir / LOCK_FILE, "w")
    except OSError as e:
        raise RunDirError(f"run.output_dir: cannot write {shown(out_dir)} ({e.strerror})") from e
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise RunInProgress(f"run.output_dir: another prge process is writing {shown(out_dir)}") from e
        try:
            present = _check_claimable(out_dir, config_yaml, overwrite, resume)
        except RunDirError:  # refused: the command leaves nothing behind (the lock, directories it made)
            if not lock_existed:
                durable.remove(out_dir / LOCK_FILE)
            for directory in created:
                try:
                    directory.rmdir()
                except OSError:
                    break
            raise
        durable.remove(out_dir / FAILED_FILE)  # the run starts again
        if resume:
            yield out_dir
            return
        for name in present:
            durable.remove(out_dir / name)
        durable.write_text(out_dir / "config.yaml", config_yaml)
        durable.boundary("config.yaml written")
        yield out_dir
    finally:
        lock.close()  # releases the lock

"""Where task data lives. A task's files are looked up, in order, in
  1. data.data_dir of the config (a path, or hf:NAME[/CONFIG] for the Hugging Face hub),
  2. $PRGE_DATA/<task>,
  3. the user data dir <user_data_dir()>/<task> (filled by `prge data copy`),
  4. ../shared/data/<task> beside the project checkout (read in place).
Data is never committed into the project."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

PROJECT_SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"


def user_data_dir() -> Path:
    """$PRGE_DATA, else $PRGE_CACHE/data, else ~/.cache/prge/data."""
    if os.environ.get("PRGE_DATA"):
        return Path(os.environ["PRGE_DATA"])
    cache = Path(os.environ.get("PRGE_CACHE", Path.home() / ".cache" / "prge"))
    return cache / "data"


def shared_candidates(task_dir: str) -> list[Path]:
    return [PROJECT_SHARED.resolve() / task_dir, Path.cwd().parent / "shared" / "data" / task_dir]


def find_task_dir(task_dir: str) -> Path:
    candidates = [user_data_dir() / task_dir] + shared_candidates(task_dir)
    for c in candidates:
        if c.is_dir():
            return c
    raise FileNotFoundError(
        f"data for '{task_dir}' not found (looked in {', '.join(map(str, candidates))}); "
        f"copy it with `prge data copy {task_dir} --from DIR`, set data.data_dir "
        "(a directory, or hf:NAME/CONFIG with internet) or PRGE_DATA")


def copy_task_data(task_dir: str, source: str | Path | None = None,
                   destination: str | Path | None = None) -> Path:
    """Copy a task's published files (default: ../shared/data/<task>) into the user data dir."""
    if source is None:
        found = [c for c in shared_candidates(task_dir) if c.is_dir()]
        if not found:
            raise FileNotFoundError(
                f"no source for '{task_dir}': looked in {', '.join(map(str, shared_candidates(task_dir)))}; "
                "pass --from DIR")
        source = found[0]
    source = Path(source)
    if not source.is_dir():
        raise FileNotFoundError(f"source directory not found: {source}")
    target = Path(destination) if destination else user_data_dir() / task_dir
    target.mkdir(parents=True, exist_ok=True)
    for f in sorted(source.iterdir()):
        if f.is_file():
            shutil.copy2(f, target / f.name)
    return target

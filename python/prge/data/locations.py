"""Where task data lives. A task's files are looked up, in order, in
  1. data.data_dir of the config (a path, or hf:NAME[/CONFIG] for the Hugging Face hub),
  2. $PRGE_DATA/<folder>,
  3. the user data dir <user_data_dir()>/<folder> (filled by `prge data copy`),
  4. ../shared/data/<folder> beside the project checkout (read in place),
where <folder> is the task's data folder (Task.data_folder: its name, or e.g. arc-easy for
arc_easy). Data is never committed into the project."""
from __future__ import annotations

import os
from pathlib import Path

from prge import durable

PROJECT_SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"


def user_data_dir() -> Path:
    """$PRGE_DATA, else $PRGE_CACHE/data, else ~/.cache/prge/data."""
    if os.environ.get("PRGE_DATA"):
        return Path(os.environ["PRGE_DATA"])
    cache = Path(os.environ.get("PRGE_CACHE", Path.home() / ".cache" / "prge"))
    return cache / "data"


def shared_candidates(task_dir: str) -> list[Path]:
    """../shared/data/<task_dir> beside the checkout and beside the working directory (once each)."""
    places = [PROJECT_SHARED.resolve() / task_dir, Path.cwd().resolve().parent / "shared" / "data" / task_dir]
    return list(dict.fromkeys(places))


def find_task_dir(task_dir: str, task: str | None = None) -> Path:
    """The first existing location of a task's data folder `task_dir`; FileNotFoundError naming
    every place looked in and how to fill one (`task`: the task's name, for that hint)."""
    candidates = [user_data_dir() / task_dir] + shared_candidates(task_dir)
    for c in candidates:
        if c.is_dir():
            return c
    raise FileNotFoundError(
        f"data for '{task or task_dir}' not found (looked in {', '.join(map(str, candidates))}); "
        f"copy it with `prge data copy {task or task_dir} --from DIR`, set data.data_dir "
        "(a directory, or hf:NAME/CONFIG with internet) or PRGE_DATA")


def copy_task_data(task_dir: str, source: str | Path | None = None,
                   destination: str | Path | None = None, check=None) -> Path:
    """Copy a task's published files (default: ../shared/data/<task_dir>) into the user data dir
    (<user_data_dir()>/<task_dir>); the files of the folder only, not its subfolders. check(source),
    when given, runs first and raises for files that are not the task's."""
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
    if check is not None:
        check(source)
    target = Path(destination) if destination else user_data_dir() / task_dir
    target.mkdir(parents=True, exist_ok=True)
    for f in sorted(source.iterdir()):
        if f.is_file():
            durable.copy_contents(f, target / f.name)  # a new file, writable: a read-only source copies again
    return target

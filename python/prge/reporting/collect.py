"""Finished runs (every summary.json below a directory) with their metrics.jsonl."""
from __future__ import annotations

import re
from pathlib import Path

from prge import run_summary
from prge.jsonl import read_jsonl

SEED_SUFFIX = re.compile(r"-seed\d+$")


def method_of(run_name: str) -> str:
    """A run's label without its -seedN suffix."""
    return SEED_SUFFIX.sub("", run_name)


# The summary fields that name a method: runs equal in all of them are seeds of one method,
# whatever their directories are called.
IDENTITY = ("mode", "runtime", "task", "model", "device", "dtype", "estimator", "queries", "parallel",
            "epsilon", "optimizer", "lr", "batch_size", "steps", "protocol")


def group_methods(runs: list[dict]) -> None:
    """Sets each run's "method": runs whose identity (run_summary.identity without the seed)
    is equal share one, named after the first such run's label without -seedN."""
    names: dict[tuple, str] = {}
    for run in runs:
        key = tuple(str(run.get(field)) for field in IDENTITY)
        run["method"] = names.setdefault(key, method_of(Path(run["run"]).name))


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return read_jsonl(path)


def collect(root: str | Path) -> list[dict]:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"runs directory not found: {root}")
    runs = []
    for path in sorted(root.rglob("summary.json")):
        summary = run_summary.read(path)
        summary["run"] = path.parent.relative_to(root).as_posix()
        summary["metrics"] = read_metrics(path.parent / "metrics.jsonl")
        runs.append(summary)
    if not runs:
        raise FileNotFoundError(f"no finished runs (summary.json) under {root}")
    group_methods(runs)
    return runs

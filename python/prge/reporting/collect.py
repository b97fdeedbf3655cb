"""Finished runs (every summary.json below a directory) with their metrics.jsonl."""
from __future__ import annotations

import json
import re
from pathlib import Path

SEED_SUFFIX = re.compile(r"-seed\d+$")


def method_of(run_name: str) -> str:
    """The run's method label: its directory name without the -seedN suffix."""
    return SEED_SUFFIX.sub("", run_name)


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def collect(root: str | Path) -> list[dict]:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"runs directory not found: {root}")
    runs = []
    for path in sorted(root.rglob("summary.json")):
        summary = json.loads(path.read_text())
        summary["run"] = path.parent.relative_to(root).as_posix()
        summary["method"] = method_of(path.parent.name)
        summary["metrics"] = read_metrics(path.parent / "metrics.jsonl")
        runs.append(summary)
    if not runs:
        raise FileNotFoundError(f"no finished runs (summary.json) under {root}")
    return runs

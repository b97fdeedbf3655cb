"""Finished runs (every summary.json below a directory) with their metrics.jsonl."""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from prge import run_summary
from prge.jsonl import read_jsonl

SEED_SUFFIX = re.compile(r"-seed\d+$")


def method_of(run_name: str) -> str:
    """A run's label without its -seedN suffix."""
    return SEED_SUFFIX.sub("", run_name)


# The summary fields that name a method where a run directory keeps no config.yaml: runs equal
# in all of them are seeds of one method, whatever their directories are called.
IDENTITY = ("mode", "runtime", "task", "model", "device", "dtype", "estimator", "queries", "parallel",
            "epsilon", "optimizer", "lr", "batch_size", "steps", "protocol")


def method_key(run: dict, run_dir: Path | None = None) -> str:
    """What makes runs seeds of one method: the run's whole config.yaml without run.seed and
    run.output_dir (so any setting that differs, e.g. model.quantize or adapter.rank, makes
    another method), or the summary's identity fields when the run directory has no config."""
    config = run_dir / "config.yaml" if run_dir is not None else None
    if config is not None and config.is_file():
        try:
            mapping = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ValueError(f"{config}: not a readable run config ({type(e).__name__}: {e})".split("\n")[0]) from e
        if not isinstance(mapping, dict) or not isinstance(mapping.get("run") or {}, dict):
            raise ValueError(f"{config}: not a run config (a mapping with a 'run' mapping)")
        mapping["run"] = {k: v for k, v in (mapping.get("run") or {}).items() if k not in ("seed", "output_dir")}
        return json.dumps(mapping, sort_keys=True, default=str)
    return json.dumps([str(run.get(field)) for field in IDENTITY])


def group_methods(runs: list[dict], root: Path | None = None) -> None:
    """Sets each run's "method": runs equal in method_key share one, named after the first
    such run's path below the runs directory without -seedN; a name that another method
    already has gets " (2)", " (3)", ... so that tables never merge two methods by name."""
    names: dict[str, str] = {}
    for run in runs:
        key = method_key(run, root / run["run"] if root is not None else None)
        if key not in names:
            name, taken, n = method_of(run["run"]), set(names.values()), 1
            while (name if n == 1 else f"{name} ({n})") in taken:
                n += 1
            names[key] = name if n == 1 else f"{name} ({n})"
        run["method"] = names[key]


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
    group_methods(runs, root)
    return runs

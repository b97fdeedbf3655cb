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


def method_key(run: dict, run_dir: Path | None = None, *, across_tasks: bool = False) -> str:
    """What makes runs seeds of one method: the run's whole config.yaml without run.seed and
    run.output_dir (so any setting that differs, e.g. model.quantize or adapter.rank, makes
    another method), or the summary's identity fields when the run directory has no config.
    across_tasks: data.task left out too, so one method's runs on several tasks share a key."""
    config = run_dir / "config.yaml" if run_dir is not None else None
    if config is not None and config.is_file():
        try:
            mapping = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ValueError(f"{config}: not a readable run config ({type(e).__name__}: {e})".split("\n")[0]) from e
        if not isinstance(mapping, dict) or not isinstance(mapping.get("run") or {}, dict):
            raise ValueError(f"{config}: not a run config (a mapping with a 'run' mapping)")
        mapping["run"] = {k: v for k, v in (mapping.get("run") or {}).items() if k not in ("seed", "output_dir")}
        if across_tasks and isinstance(mapping.get("data"), dict):
            mapping["data"] = {k: v for k, v in mapping["data"].items() if k != "task"}
        return json.dumps(mapping, sort_keys=True, default=str)
    fields = [f for f in IDENTITY if not (across_tasks and f == "task")]
    return json.dumps([str(run.get(field)) for field in fields])


def _unique_names(runs: list[dict], key_of, name_of, field: str) -> None:
    """run[field] = a name per distinct key_of(run), from name_of of the key's first run; a name
    another key already has gets " (2)", " (3)", ... so that tables never merge two by name."""
    names: dict[str, str] = {}
    for run in runs:
        key = key_of(run)
        if key not in names:
            name, taken, n = name_of(run), set(names.values()), 1
            while (name if n == 1 else f"{name} ({n})") in taken:
                n += 1
            names[key] = name if n == 1 else f"{name} ({n})"
        run[field] = names[key]


def _without_task(run: dict) -> str:
    """The run's method name without the sweep's "-task<name>" part (prge_q4_dual-taskrte -> prge_q4_dual)."""
    name, task = run["method"], str(run.get("task") or "")
    return re.sub(rf"-task{re.escape(task)}(?=-|$)", "", name) if task else name


def group_methods(runs: list[dict], root: Path | None = None) -> None:
    """Sets each run's "method": runs equal in method_key share one, named after the first
    such run's path below the runs directory without -seedN (made unique as _unique_names
    does); and its "variant": the same across tasks (method_key without data.task), named
    after the method without its "-task<name>" part, for the task x method table."""
    run_dir = (lambda run: root / run["run"]) if root is not None else (lambda run: None)  # noqa: E731
    _unique_names(runs, lambda run: method_key(run, run_dir(run)), lambda run: method_of(run["run"]), "method")
    _unique_names(runs, lambda run: method_key(run, run_dir(run), across_tasks=True), _without_task, "variant")


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

"""Sweeps: a base config crossed with a grid (and optional named variants). Each run
gets its own directory; a run finished with the same config (its stored config.yaml) is
skipped, so an interrupted sweep resumes where it stopped; one finished with other settings
is refused, naming the difference; a run another process is writing is left to it.

    base: CONFIG.yaml or an inline config     grid: {key: [values]}   (crossed)
    variants: [{name: ..., key: value}]       output_root: runs/NAME
    mode: train (default) | speed             speed: {warmup, steps, shape}
    report: {title: ..., out: DIR}            (where `prge report` writes tables/figures)

`prge sweep FILE --gpus 0,1,...` runs one run per listed GPU at a time."""
from __future__ import annotations

import itertools
import sys
from pathlib import Path

import yaml

from prge._core import parse_run_config
from prge.overrides import apply_overrides
from prge import checkpoints
from prge.run_dir import RunInProgress, finished, resumable

SWEEP_KEYS = {"base", "output_root", "grid", "variants", "mode", "speed", "report"}
MODES = ("train", "speed")


def load_sweep_spec(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep file not found: {path}")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: malformed YAML: {e}") from e
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: a sweep file is a mapping of {sorted(SWEEP_KEYS)}")
    unknown = set(spec) - SWEEP_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown sweep key(s) {sorted(unknown)} (allowed: {sorted(SWEEP_KEYS)})")
    if spec.get("mode", "train") not in MODES:
        raise ValueError(f"{path}: mode must be one of {MODES}, got {spec['mode']!r}")
    from prge.speed import SPEED_KEYS

    unknown = set(spec.get("speed") or {}) - SPEED_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown speed key(s) {sorted(unknown)} (allowed: {sorted(SPEED_KEYS)})")
    return spec


def expand_sweep(path: str | Path, overrides: dict | None = None,
                 output_root: str | None = None) -> list[tuple[str, object]]:
    """(label, RunConfig) of every run; overrides (dotted keys) apply to every run, last."""
    path = Path(path)
    spec = load_sweep_spec(path)
    base = spec.get("base", {})
    if isinstance(base, str):
        base_path = (path.parent / base).resolve()
        if not base_path.is_file():
            raise FileNotFoundError(f"{path}: base config not found: {base_path}")
        base = yaml.safe_load(base_path.read_text()) or {}
    grid = spec.get("grid", {}) or {}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"{path}: grid.{key} must be a non-empty list")
    variants = spec.get("variants") or [{"name": "run"}]
    root = Path(output_root or spec.get("output_root", f"runs/{path.stem}"))
    runs, warned = [], set()
    for variant in variants:
        variant = dict(variant)
        name = str(variant.pop("name", "run"))
        for combo in itertools.product(*grid.values()):
            point = dict(zip(grid.keys(), combo))
            label = "-".join([name] + [f"{k.split('.')[-1]}{v}" for k, v in point.items()])
            tree = apply_overrides(base, {**variant, **point, **(overrides or {}),
                                          "run.output_dir": str(root / label)})
            config = parse_run_config(yaml.safe_dump(tree, sort_keys=False), f"{path} [{label}]")
            for warning in config.warnings:  # once per sweep: "key: message" without the location
                message = warning.split(": ", 1)[-1]
                if message not in warned:
                    warned.add(message)
                    print(f"prge: warning: {path}: {message}", file=sys.stderr)
            runs.append((label, config))
    return runs


def run_sweep(path: str | Path, log=print, progress: bool = True, overrides: dict | None = None,
              output_root: str | None = None, gpus: list[str] | None = None) -> list[dict]:
    """Every run of the sweep, one after another in this process; with `gpus`, as many at once
    as GPUs are listed, each in its own process on its own GPU (prge.sweep_gpus)."""
    from prge.speed import run_speed
    from prge.train import run_training
    import json

    spec = load_sweep_spec(path)
    speed = spec.get("mode", "train") == "speed"
    if gpus and speed:
        raise ValueError(f"{path}: mode: speed measures one run at a time; run it without --gpus")
    summaries, pending = [], []
    runs = expand_sweep(path, overrides, output_root)
    for i, (label, config) in enumerate(runs, 1):
        out_dir = Path(config.run.output_dir)
        if finished(out_dir, config.to_yaml()):
            log(f"[prge] ({i}/{len(runs)}) {label}: finished earlier, skipping")
            summaries.append(json.loads((out_dir / "summary.json").read_text()))
            continue
        # An interrupted run continues from its checkpoint; without one it starts again.
        resume = not speed and checkpoints.exists(out_dir) and resumable(out_dir, config.to_yaml())
        if gpus:
            pending.append((f"({i}/{len(runs)}) {label}", config, resume))
            continue
        log(f"[prge] ({i}/{len(runs)}) {label}")
        try:
            if speed:
                summaries.append(run_speed(config, log=log, overwrite=True, **(spec.get("speed") or {})))
            else:
                summaries.append(run_training(config, progress=progress, log=log, overwrite=True, resume=resume))
        except RunInProgress:
            log(f"[prge] ({i}/{len(runs)}) {label}: another process is running it, skipping")
    if pending:
        from prge.sweep_gpus import run_on_gpus

        summaries += run_on_gpus(pending, gpus, log)
    return summaries

"""Sweeps: a base config crossed with a grid (and optional named variants). Each run
gets its own directory; runs whose summary.json exists are skipped, so an interrupted
sweep resumes where it stopped."""
from __future__ import annotations

import itertools
from pathlib import Path

import yaml

from prge._core import parse_run_config
from prge.overrides import apply_overrides

SWEEP_KEYS = {"base", "output_root", "grid", "variants"}


def expand_sweep(path: str | Path) -> list[tuple[str, object]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep file not found: {path}")
    spec = yaml.safe_load(path.read_text()) or {}
    unknown = set(spec) - SWEEP_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown sweep key(s) {sorted(unknown)} (allowed: {sorted(SWEEP_KEYS)})")
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
    root = Path(spec.get("output_root", f"runs/{path.stem}"))
    runs = []
    for variant in variants:
        variant = dict(variant)
        name = str(variant.pop("name", "run"))
        for combo in itertools.product(*grid.values()):
            point = dict(zip(grid.keys(), combo))
            label = "-".join([name] + [f"{k.split('.')[-1]}{v}" for k, v in point.items()])
            tree = apply_overrides(base, {**variant, **point, "run.output_dir": str(root / label)})
            config = parse_run_config(yaml.safe_dump(tree), f"{path} [{label}]")
            runs.append((label, config))
    return runs


def run_sweep(path: str | Path, log=print) -> list[dict]:
    from prge.train import run_training
    import json

    summaries = []
    runs = expand_sweep(path)
    for i, (label, config) in enumerate(runs, 1):
        summary_path = Path(config.run.output_dir) / "summary.json"
        if summary_path.is_file():
            log(f"[prge] ({i}/{len(runs)}) {label}: finished earlier, skipping")
            summaries.append(json.loads(summary_path.read_text()))
            continue
        log(f"[prge] ({i}/{len(runs)}) {label}")
        summaries.append(run_training(config, log=log))
    return summaries

"""Markdown table of finished runs (every */summary.json below a directory)."""
from __future__ import annotations

import json
from pathlib import Path


def collect(root: str | Path) -> list[dict]:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"runs directory not found: {root}")
    runs = []
    for path in sorted(root.glob("*/summary.json")):
        summary = json.loads(path.read_text())
        summary["run"] = path.parent.name
        runs.append(summary)
    if not runs:
        raise FileNotFoundError(f"no finished runs (*/summary.json) under {root}")
    return runs


def markdown_table(runs: list[dict], title: str) -> str:
    lines = [f"# {title}", "",
             "| run | estimator | q | parallel | steps | seed | accuracy before | final | best | s/step |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        step = r.get("mean_step_seconds")
        lines.append(
            f"| {r['run']} | {r['estimator']} | {r['queries']} | {r['parallel']} | {r['steps']} | "
            f"{r['seed']} | {r['accuracy_before']:.3f} | {r['accuracy_after']:.3f} | "
            f"{r['accuracy_best']:.3f} | {step:.2f} |" if step is not None else
            f"| {r['run']} | {r['estimator']} | {r['queries']} | {r['parallel']} | {r['steps']} | "
            f"{r['seed']} | {r['accuracy_before']:.3f} | {r['accuracy_after']:.3f} | "
            f"{r['accuracy_best']:.3f} | - |")
    return "\n".join(lines) + "\n"

"""Two or more training runs side by side: the mean training loss over windows of steps and the
evaluations, from each run folder's metrics.jsonl (as `prge train` writes it).

    python experiments/compare_training_runs.py NAME=RUN_DIR NAME=RUN_DIR ... [--window 500]

prints a markdown table per quantity: rows are step windows (loss: the mean of the logged losses
with step in (end - window, end]) or evaluation steps (accuracy), columns the named runs; '-' where
a run has no value. Used for session 29's bfloat16 / float32 check of Gemma 3 270M's P-RGE q = 4
SST-2 run (experiments/results/gemma3_fp32_check/)."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl's records: each a JSON object with an integer step, and a finite loss and
    eval_accuracy where it has them. Raises ValueError naming the file and line of a bad one, or the
    file when it has no record."""
    path = run_dir / "metrics.jsonl"
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    records = []
    for number_, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{number_}: not JSON ({e.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int) or isinstance(record["step"], bool):
            raise ValueError(f"{path}:{number_}: expected an object with an integer step")
        for key in ("loss", "eval_accuracy"):
            if key in record and not number(record[key]):
                raise ValueError(f"{path}:{number_}: {key} {record[key]!r} is not a finite number")
        records.append(record)
    if not records:
        raise ValueError(f"{path}: no records")
    return records


def loss_windows(records: list[dict], window: int) -> dict[int, float]:
    """window end step -> mean training loss of the records with step in (end - window, end]."""
    sums: dict[int, list[float]] = {}
    for r in records:
        if "loss" in r and r["step"] > 0:
            end = -(-r["step"] // window) * window
            sums.setdefault(end, []).append(float(r["loss"]))
    return {end: sum(v) / len(v) for end, v in sorted(sums.items())}


def evaluations(records: list[dict]) -> dict[int, float]:
    """step -> eval_accuracy."""
    return {r["step"]: float(r["eval_accuracy"]) for r in records if "eval_accuracy" in r}


def table(title: str, columns: dict[str, dict[int, float]]) -> str:
    steps = sorted({step for values in columns.values() for step in values})
    lines = [f"| {title} | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for step in steps:
        cells = [f"{values[step]:.3f}" if step in values else "-" for values in columns.values()]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="NAME=RUN_DIR")
    parser.add_argument("--window", type=int, default=500, help="steps a loss window spans (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        if args.window < 1:
            raise ValueError(f"--window {args.window}: must be positive")
        runs = {}
        for spec in args.runs:
            name, sep, folder = spec.partition("=")
            if not sep or not name or not folder:
                raise ValueError(f"{spec!r}: expected NAME=RUN_DIR")
            if name in runs:
                raise ValueError(f"{name!r} named twice")
            runs[name] = read_metrics(Path(folder))
    except (ValueError, OSError) as e:
        print(f"compare_training_runs: error: {e}", file=sys.stderr)
        return 2
    print(table(f"training loss, mean over {args.window} steps ending at",
                {n: loss_windows(r, args.window) for n, r in runs.items()}))
    print()
    print(table("eval accuracy at step", {n: evaluations(r) for n, r in runs.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""matplotlib figures: training loss vs step, accuracy vs forward-pass work, and
speed-up vs q. Each method's curves are averaged over its seeds."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _by_method(runs: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        groups[r["method"]].append(r)
    return groups


def _mean_curve(members: list[dict], x_key: str, y_key: str) -> tuple[list, list]:
    """Mean of y over the seeds at each x every seed has."""
    per_run = [{m[x_key]: m[y_key] for m in r["metrics"] if y_key in m and x_key in m} for r in members]
    common = sorted(set.intersection(*(set(c) for c in per_run))) if per_run else []
    return common, [sum(c[x] for c in per_run) / len(per_run) for x in common]


def _smooth(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def accuracy_figures(runs: list[dict], out: Path, name: str) -> list[str]:
    plt = _pyplot()
    groups = _by_method(runs)
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, members in groups.items():
        steps, losses = _mean_curve(members, "step", "loss")
        if steps:
            ax.plot(steps, _smooth(losses, max(1, len(steps) // 20)), label=method)
    ax.set(xlabel="step", ylabel="training loss (moving average)", title="Loss vs step")
    ax.legend(fontsize=7)
    fig.tight_layout()
    loss_file = f"{name}_loss_vs_step.png"
    fig.savefig(out / loss_file, dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, members in groups.items():
        work, acc = _mean_curve(members, "sequences", "eval_accuracy")
        if work:
            ax.plot(work, acc, marker="o", label=method)
    ax.set(xlabel="sequences forwarded (forward-pass work)", ylabel="eval accuracy",
           title="Accuracy vs forward passes")
    ax.legend(fontsize=7)
    fig.tight_layout()
    acc_file = f"{name}_accuracy_vs_forward_passes.png"
    fig.savefig(out / acc_file, dpi=120)
    plt.close(fig)
    return [loss_file, acc_file]


def speed_figures(speed_rows: list[dict], out: Path, name: str) -> list[str]:
    """speed_rows: tables.speed_rows(runs)."""
    plt = _pyplot()
    rows = [r for r in speed_rows if r["speedup_vs_sequential"] and r["parallel"] != "sequential"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for parallel in ("queries", "dual"):
        points = sorted((r["queries"], r["speedup_vs_sequential"]) for r in rows if r["parallel"] == parallel)
        if points:
            ax.plot(*zip(*points), marker="o", label=f"P-RGE {parallel}")
    ax.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="queries q (q · batch fixed)", ylabel="speed-up over sequential queries",
           title="Speed-up vs q")
    ax.legend()
    fig.tight_layout()
    file_name = f"{name}_speedup_vs_q.png"
    fig.savefig(out / file_name, dpi=120)
    plt.close(fig)
    return [file_name]

"""matplotlib figures: training loss vs step, accuracy vs forward-pass work, and
speed-up vs q. Each method's curves are averaged over its seeds."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path


def pyplot():
    """matplotlib's pyplot (Agg); ImportError saying how to get it, or to go without figures."""
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("prge report draws its figures with matplotlib, which is not installed: "
                          "pip install matplotlib (or prge[report]), or pass --no-figures") from e

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _count_axis(axis) -> None:
    """At most 5 ticks on an axis of counts (steps, sequences), written 200k, 1.5M: the default
    ticks of 10^5-10^6 run into each other in a small panel."""
    from matplotlib.ticker import EngFormatter, MaxNLocator

    axis.set_major_locator(MaxNLocator(5))
    axis.set_major_formatter(EngFormatter(sep=""))


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


def _panels(runs: list[dict]):
    """(figure, [(axes, title, {label: members})]): one panel when the runs share a task (a
    line per method); with several tasks, one small panel per task, a line per method across
    tasks (its "variant"), so that each method keeps one colour."""
    plt = pyplot()
    tasks = list(dict.fromkeys(str(r.get("task")) for r in runs))
    if len(tasks) == 1:
        fig, ax = plt.subplots(figsize=(6, 4))
        return fig, [(ax, "", _by_method(runs))]
    columns = min(4, len(tasks))
    rows = (len(tasks) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), squeeze=False)
    for ax in axes.flat[len(tasks):]:
        ax.axis("off")
    panels = []
    for ax, task in zip(axes.flat, tasks):
        groups: dict[str, list[dict]] = defaultdict(list)
        for r in runs:
            if str(r.get("task")) == task:
                groups[r.get("variant", r["method"])].append(r)
        panels.append((ax, task, groups))
    return fig, panels


def _plot(runs: list[dict], x_key: str, y_key: str, smooth: bool, labels: dict, title: str, path: Path) -> None:
    plt = pyplot()
    fig, panels = _panels(runs)
    colours = {}
    for ax, task, groups in panels:
        for label, members in groups.items():
            x, y = _mean_curve(members, x_key, y_key)
            if not x:
                continue
            colour = colours.setdefault(label, f"C{len(colours) % 10}")
            ax.plot(x, _smooth(y, max(1, len(x) // 20)) if smooth else y, marker=None if smooth else "o",
                    markersize=3, color=colour, label=label)
        ax.set(xlabel=labels[x_key], ylabel=labels[y_key], title=task or title)
        ax.tick_params(labelsize=7)
        _count_axis(ax.xaxis)
        if len(panels) == 1 and ax.get_lines():
            ax.legend(fontsize=7)
    if len(panels) > 1:  # one legend below the panels, clear of every axis
        handles = [plt.Line2D([], [], color=c, label=label) for label, c in colours.items()]
        columns = min(4, max(1, len(handles)))
        rows = (len(handles) + columns - 1) // columns
        fig.legend(handles=handles, loc="lower center", ncol=columns, fontsize=8, frameon=False)
        fig.suptitle(title)
        fig.tight_layout(rect=(0, 0.04 + 0.3 * rows / fig.get_size_inches()[1], 1, 1))
    else:
        fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def accuracy_figures(runs: list[dict], out: Path, name: str, metric: str = "accuracy") -> list[str]:
    """Training loss vs step and eval `metric` (the runs' primary metric) vs sequences forwarded."""
    labels = {"step": "step", "loss": "training loss",
              "sequences": "sequences forwarded", f"eval_{metric}": f"eval {metric}"}
    loss_file = f"{name}_loss_vs_step.png" if metric == "accuracy" else f"{name}_{metric}_loss_vs_step.png"
    acc_file = f"{name}_{metric}_vs_forward_passes.png"
    _plot(runs, "step", "loss", True, labels, "Training loss vs step (moving average)", out / loss_file)
    _plot(runs, "sequences", f"eval_{metric}", False, labels,
          f"{metric[0].upper() + metric[1:]} vs forward passes (sequences forwarded)", out / acc_file)
    return [loss_file, acc_file]


def speed_figures(speed_rows: list[dict], out: Path, name: str) -> list[str]:
    """speed_rows: tables.speed_rows(runs)."""
    plt = pyplot()
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

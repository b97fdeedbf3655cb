"""Markdown and CSV tables: one row per run, and one per method (mean ± std over seeds)."""
from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from pathlib import Path

from prge.reporting import figures as figures_module

RUN_COLUMNS = ["run", "method", "task", "model", "estimator", "queries", "parallel", "batch_size", "steps", "seed",
               "protocol", "forward_passes", "sequences", "accuracy_before", "accuracy_best",
               "best_step", "accuracy_after", "macro_f1_before", "macro_f1_after", "majority_accuracy",
               "mean_step_seconds", "wall_seconds", "device_name"]  # the card the step times are of
SPEED_COLUMNS = ["method", "estimator", "queries", "parallel", "batch_size", "seq_len",
                 "forward_passes_per_step", "sequences_per_step", "step_seconds",
                 "tokens_per_second", "peak_memory_gib", "speedup_vs_sequential", "device_name"]
MAJORITY = "majority class"  # the by-task table's column of always answering the most frequent label


def metric_of(run: dict) -> str | None:
    """A training run's primary metric (what its best checkpoint was picked by): X of its numeric
    X_best field (accuracy for classification and multiple choice, perplexity for generation)."""
    for key, value in run.items():
        if key.endswith("_best") and isinstance(value, (int, float)) and not isinstance(value, bool):
            return key[:-len("_best")]
    return None


def run_columns(metric: str) -> list[str]:
    """RUN_COLUMNS for runs whose primary metric is `metric` (accuracy's own: RUN_COLUMNS)."""
    if metric == "accuracy":
        return RUN_COLUMNS
    return [c.replace("accuracy", metric) for c in RUN_COLUMNS if c != "majority_accuracy"]


def model_labels(runs: list[dict]) -> dict[str, str]:
    """Each model the runs name (their model.name: a directory, a .gguf path or a registered
    name) -> how a report labels it: the last part of its path, or the whole name where two
    models' paths end alike (/a/llama-7b and /b/llama-7b)."""
    names = list(dict.fromkeys(str(r.get("model") or "-") for r in runs))
    short = {n: n.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or n for n in names}
    return {n: short[n] if list(short.values()).count(short[n]) == 1 else n for n in names}


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def accuracy_rows(runs: list[dict], metric: str = "accuracy") -> list[dict]:
    """One row per method: mean and std over its seeds of best and final `metric`."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        groups[r["method"]].append(r)
    rows = []
    for method, members in groups.items():
        first = members[0]
        best = _mean_std([m[f"{metric}_best"] for m in members])
        final = _mean_std([m[f"{metric}_after"] for m in members])
        rows.append({"method": method, "estimator": first["estimator"], "queries": first["queries"],
                     "parallel": first["parallel"], "batch_size": first.get("batch_size"),
                     "steps": first["steps"], "seeds": " ".join(str(m["seed"]) for m in members),
                     f"{metric}_before": statistics.fmean(m[f"{metric}_before"] for m in members),
                     "best_mean": best[0], "best_std": best[1],
                     "final_mean": final[0], "final_std": final[1],
                     "sequences": first.get("sequences")})
    return rows


def _cell(values: list[float]) -> str:
    """mean ± std (seeds), or the value and (1) for one seed: a single run has no spread."""
    if len(values) == 1:
        return f"{values[0]:.3f} (1)"
    mean, std = _mean_std(values)
    return f"{mean:.3f} ± {std:.3f} ({len(values)})"


def task_rows(runs: list[dict], metric: str = "accuracy") -> tuple[list[str], list[dict]]:
    """The paper's table layout: one row per task (runs with a best `metric`); its zero-shot value
    (<metric>_before) per model and dtype (each named where the runs have several), since two
    models, or a bfloat16 and a float32 copy of one, start apart; the
    majority-class accuracy where the task has one; then one column per variant (a method
    across tasks), each cell the best accuracy's mean ± std over the variant's seeds on that
    task; a last row with each column's mean over the tasks where it has values (and how many)."""
    runs = [r for r in runs if isinstance(r.get(f"{metric}_best"), (int, float))]
    if not runs:
        return [], []
    task_of = lambda r: str(r.get("task") or "-")  # noqa: E731
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    widest = max(variants, key=lambda v: len({task_of(r) for r in runs if r["variant"] == v}))
    tasks = list(dict.fromkeys([task_of(r) for r in runs if r["variant"] == widest] + [task_of(r) for r in runs]))
    labels = model_labels(runs)
    start_of = lambda r: (str(r.get("model") or "-"), str(r.get("dtype") or ""))  # noqa: E731  (a model as loaded)
    starts = list(dict.fromkeys([start_of(r) for r in runs if r["variant"] == widest] + [start_of(r) for r in runs]))
    varies = [len({start[i] for start in starts}) > 1 for i in range(2)]  # model, dtype
    zero_shot = {start: " ".join(["zero-shot", *(part for part, named in zip((labels[start[0]], start[1]), varies)
                                                 if named)]) for start in starts}
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in runs:
        cells[(task_of(r), r["variant"])].append(r[f"{metric}_best"])
        if isinstance(r.get(f"{metric}_before"), (int, float)):
            cells[(task_of(r), zero_shot[start_of(r)])].append(r[f"{metric}_before"])
        if metric == "accuracy" and isinstance(r.get("majority_accuracy"), (int, float)):
            cells[(task_of(r), MAJORITY)].append(r["majority_accuracy"])
    columns = [*zero_shot.values(), *([MAJORITY] if metric == "accuracy" else []), *variants]
    rows = []
    for task in tasks:
        row = {"task": task}
        for c in columns:
            if cells.get((task, c)):
                row[c] = (f"{statistics.fmean(cells[(task, c)]):.3f}" if c not in variants
                          else _cell(cells[(task, c)]))
        rows.append(row)
    means = {"task": "mean over tasks"}
    for c in columns:
        per_task = [statistics.fmean(cells[(t, c)]) for t in tasks if cells.get((t, c))]
        if per_task:
            means[c] = f"{statistics.fmean(per_task):.3f} ({len(per_task)} task{'s' if len(per_task) > 1 else ''})"
    return ["task", *columns], rows + [means]



def speed_rows(runs: list[dict]) -> list[dict]:
    """One row per method with its speed-up over the sequential (parallel: sequential) run of
    the same estimator kind and q, measured in the same sweep."""
    sequential = {(r["estimator"], r["queries"]): r["step_seconds"]
                  for r in runs if r["parallel"] == "sequential"}
    rows = []
    for r in runs:
        base = sequential.get((r["estimator"], r["queries"]))
        rows.append({**{k: r.get(k) for k in SPEED_COLUMNS if k in r}, "method": r["method"],
                     "speedup_vs_sequential": base / r["step_seconds"] if base else None})
    return rows


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_cell(text: str) -> str:
    """A table cell's text that keeps the row whole: a line break as <br>, '|' escaped."""
    return "<br>".join(text.replace("\\", "\\\\").replace("|", "\\|").splitlines()) if text else text


def _markdown(columns: list[str], rows: list[dict]) -> list[str]:
    lines = ["| " + " | ".join(map(markdown_cell, columns)) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(markdown_cell(_fmt(r.get(c))) for c in columns) + " |" for r in rows]
    return lines


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_report(runs: list[dict], title: str, out_dir: str | Path | None, name: str,
                 figures: bool = True, unfinished: list[str] = (), not_started: list[str] = (),
                 failed: list[str] = ()) -> str:
    """Markdown of the report; with out_dir, also <name>.md, CSVs and figures there.
    unfinished: run directories without a summary (collect.unfinished), named, not counted;
    failed: runs a sweep marked as failed, with why (collect.failed), named;
    not_started: a sweep's runs with no directory yet (sweep.not_started_runs), named."""
    if out_dir is not None and figures:
        figures_module.pyplot()  # before any file is written: a missing matplotlib leaves no half a report
    speed = all(r.get("mode") == "speed" for r in runs)
    lines = [f"# {title}", ""]
    if unfinished:
        lines += [f"Not in the tables: {len(unfinished)} run(s) without a summary.json (stopped, failed or still "
                  "running): " + ", ".join(unfinished), ""]
    if failed:
        lines += [f"Failed: {len(failed)} run(s): " + "; ".join(failed), ""]
    if not_started:
        lines += [f"Not started: {len(not_started)} of the sweep's runs: " + ", ".join(not_started), ""]
    repeats = [r for r in runs if r.get("repeats")]
    if repeats:
        lines += [f"Left out: {len(repeats)} run(s) repeating an earlier run's method, task and seed (each seed counts "
                  "once): " + ", ".join(f"{r['run']} (as {r['repeats']})" for r in repeats), ""]
        runs = [r for r in runs if not r.get("repeats")]
    written = []
    if speed:
        rows = speed_rows(runs)
        lines += ["Speed at equal forward passes, measured in one process; speed-up is over the "
                  "sequential run (parallel: sequential) of the same estimator and q.", ""]
        lines += _markdown(SPEED_COLUMNS, rows)
        tables = [(f"{name}_speed.csv", SPEED_COLUMNS, rows)]
    else:
        tables, by_metric = [], defaultdict(list)
        for r in runs:
            by_metric[metric_of(r)].append(r)
        left_out = by_metric.pop(None, [])
        if left_out:
            lines += [f"Left out: {len(left_out)} run(s) without a best metric (not training runs): "
                      + ", ".join(r["run"] for r in left_out), ""]
        for metric, members in by_metric.items():
            stem = name if metric == "accuracy" else f"{name}_{metric}"
            if len(by_metric) > 1:
                lines += [f"## {metric}", ""]
            lines += _metric_section(members, metric, stem, tables, "###" if len(by_metric) > 1 else "##") + [""]
        lines = lines[:-1]
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for file_name, columns, rows in tables:
            _write_csv(out / file_name, columns, rows)
            written.append(file_name)
        if figures:
            if speed:
                written += figures_module.speed_figures(speed_rows(runs), out, name)
            else:
                for metric, members in by_metric.items():
                    written += figures_module.accuracy_figures(members, out, name, metric)
        lines += ["", "Files: " + ", ".join(written)]
    markdown = "\n".join(lines) + "\n"
    if out_dir is not None:
        (Path(out_dir) / f"{name}.md").write_text(markdown)
    return markdown


def _metric_section(runs: list[dict], metric: str, stem: str, tables: list, heading: str) -> list[str]:
    """Markdown of one primary metric's tables (by task when the runs span tasks, by method, by
    run); appends their (file name, columns, rows) to `tables`."""
    lines = []
    per_method = accuracy_rows(runs, metric)
    method_columns = ["method", "estimator", "queries", "parallel", "batch_size", "steps",
                      "seeds", f"{metric}_before", "best_mean", "best_std", "final_mean", "final_std"]
    task_columns, by_task = task_rows(runs, metric) if len({str(r.get("task")) for r in runs}) > 1 else ([], [])
    if by_task:
        majority = (", majority class that of always answering the most frequent label"
                    if metric == "accuracy" else "")
        lines += [f"Best {metric} by task: mean ± std over seeds (number of seeds); zero-shot is the "
                  f"{metric} before training (per model and dtype){majority}; the last row is each column's "
                  "mean over the tasks it has.", ""]
        lines += _markdown(task_columns, by_task) + [""]
        tables.append((f"{stem}_by_task.csv", task_columns, by_task))
    lines += [f"{metric[0].upper() + metric[1:]} over seeds (mean ± std): best checkpoint and final.", ""]
    lines += _markdown(method_columns, per_method)
    lines += ["", f"{heading} Runs", ""]
    lines += _markdown(run_columns(metric), runs)
    tables += [(f"{stem}_methods.csv", method_columns, per_method), (f"{stem}_runs.csv", run_columns(metric), runs)]
    return lines

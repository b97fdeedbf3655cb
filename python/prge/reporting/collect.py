"""Finished runs (every summary.json below a directory) with their metrics.jsonl and config.yaml,
and the run directories that have no summary: still running or stopped (unfinished), or marked as
failed by a sweep (failed)."""
from __future__ import annotations

import collections
import json
import re
from pathlib import Path

import yaml

from prge import run_summary
from prge.jsonl import read_jsonl
from prge.overrides import safe_load_checked
from prge.run_dir import FAILED_FILE, STORAGE_SETTINGS, failure_of, shown
from prge.reporting.tables import model_labels
from prge.sweep import grid_label
from prge.whitespace import visible

SEED_SUFFIX = re.compile(r"-seed\d+$")


def method_of(run_name: str, seed=None) -> str:
    """A run's label without its seed's part: the last -seedN of the name for the run's own seed
    (sweep.grid_label's run.seed part, wherever the grid put it: v-seed42-taskrte -> v-taskrte;
    a model directory named ...-seed1 keeps its name), or a trailing -seedN when the seed is not
    known."""
    if seed is None:
        return SEED_SUFFIX.sub("", run_name)
    part = f"-seed{seed}"
    at = run_name.rfind(part)
    while at >= 0 and not (at + len(part) == len(run_name) or run_name[at + len(part)] == "-"):
        at = run_name.rfind(part, 0, at)
    return run_name if at < 0 else run_name[:at] + run_name[at + len(part):]


# The summary fields that name a method where a run directory keeps no config.yaml: runs equal
# in all of them are seeds of one method, whatever their directories are called.
IDENTITY = ("mode", "runtime", "task", "model", "device", "dtype", "estimator", "queries", "parallel",
            "epsilon", "optimizer", "lr", "batch_size", "steps", "protocol", "quantize", "group_size")


# The data settings that belong to a method rather than to its task (the rest of `data:` names the
# task, its files, template and label words, or where its data is found).
METHOD_DATA_KEYS = ("batch_size", "max_length", "protocol", "train_examples", "dev_examples", "eval_examples",
                    "train_from")


# Where a custom task's files are, as its config spells it (data_files says what they hold).
DATA_LOCATION_KEYS = ("data_dir", "train_file", "eval_file")


def read_run_config(run_dir: Path) -> dict | None:
    """A run directory's config.yaml as a mapping, None where it has none; ValueError naming the
    file when it is unreadable or not a run config (a mapping with a 'run' mapping)."""
    config = run_dir / "config.yaml"
    if not config.is_file():
        return None
    try:
        mapping = safe_load_checked(config.read_text(encoding="utf-8"), str(config)) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"{config}: not a readable run config ({type(e).__name__}: {' '.join(str(e).split())})") from e
    if not isinstance(mapping, dict) or not isinstance(mapping.get("run") or {}, dict):
        raise ValueError(f"{config}: not a run config (a mapping with a 'run' mapping)")
    return mapping


def method_key(run: dict, *, across_tasks: bool = False) -> str:
    """What makes runs seeds of one method: the run's whole config (run["run_config"], from
    read_run_config) without run.seed, run.output_dir and the settings of how checkpoints are
    stored (prge.run_dir.STORAGE_SETTINGS: they change no number), with the summary's mode and
    runtime (a config trained through an inference runtime is another method), so that any other
    setting that differs (e.g. model.quantize or adapter.rank) makes another method; a custom task's file paths replaced
    by their contents' digests (data_digests), or the summary's identity fields when the run
    directory has no config. across_tasks: of `data:` only METHOD_DATA_KEYS kept, so one
    method's runs on several tasks share a key."""
    config = run.get("run_config")
    if config is not None:
        mapping = dict(config)
        # what ran the config, which config.yaml does not say: a speed measurement or training,
        # prge's trainer or an inference runtime (`prge train --runtime`)
        mapping["summary"] = {"mode": run.get("mode", "train"), "runtime": run.get("runtime", "eager")}
        mapping["run"] = {k: v for k, v in (mapping.get("run") or {}).items()
                          if k not in ("seed", "output_dir", *STORAGE_SETTINGS)}
        if across_tasks and isinstance(mapping.get("data"), dict):  # what makes the task, and where its data is, go
            mapping["data"] = {k: v for k, v in mapping["data"].items() if k in METHOD_DATA_KEYS}
        elif isinstance(mapping.get("data"), dict) and (digests := data_digests(run)) is not None:
            # a custom task's files by content, not by how the config spelled their paths
            mapping["data"] = {**{k: v for k, v in mapping["data"].items() if k not in DATA_LOCATION_KEYS},
                               "data_files": digests}
        return json.dumps(mapping, sort_keys=True, default=str)
    fields = [f for f in IDENTITY if not (across_tasks and f == "task")]
    digests = None if across_tasks else data_digests(run)
    return json.dumps([str(run.get(field)) for field in fields] + ([digests] if digests else []))


def _unique_names(runs: list[dict], key_of, name_of, field: str) -> None:
    """run[field] = a name per distinct key_of(run), from name_of(the key's runs); a name another
    key already has gets " (2)", " (3)", ... so that tables never merge two by name."""
    members: dict[str, list[dict]] = {}
    for run in runs:
        members.setdefault(key_of(run), []).append(run)
    taken: set[str] = set()
    for group in members.values():
        name, n = name_of(group), 1
        while (name if n == 1 else f"{name} ({n})") in taken:
            n += 1
        name = name if n == 1 else f"{name} ({n})"
        taken.add(name)
        for run in group:
            run[field] = name


def _variant_name(group: list[dict], models: dict[str, str] | None = None) -> str:
    """A method across tasks: its runs' names without -seedN and the task's part of a sweep's
    run name (sweep.grid_label: prge_q4_dual-taskrte -> prge_q4_dual) when they all agree on that; otherwise (names that
    carry the task some other way) the folder name they share (rte/prge and sst2/prge -> prge),
    else what the runs share: estimator, q and parallel mode, and the model's label where the
    report holds several (`models`: tables.model_labels)."""
    def short(run):
        name, task = method_of(run["run"], run.get("seed")), str(run.get("task") or "")
        return re.sub(rf"-{re.escape(grid_label('data.task', task))}(?=-|$)", "", name) if task else name
    names = {short(run) for run in group}
    if len(names) == 1:
        return names.pop()
    basenames = {name.rsplit("/", 1)[-1] for name in names}  # TASK/METHOD folders
    if len(basenames) == 1:
        return basenames.pop()
    first = group[0]
    return (f"{first.get('estimator')} q={first.get('queries')} {first.get('parallel')}"
            + (f" {models[str(first.get('model') or '-')]}" if models and len(models) > 1 else ""))


def group_methods(runs: list[dict]) -> None:
    """Sets each run's "method": runs equal in method_key share one, named after the first
    such run's path below the runs directory without -seedN (made unique as _unique_names
    does); and its "variant": the same across tasks (method_key without data.task), named as
    _variant_name says (with the model's label where two models' methods would share a name), for
    the task x method table."""
    _unique_names(runs, method_key,
                  lambda group: _with_runtime(method_of(group[0]["run"], group[0].get("seed")), group), "method")
    models = model_labels(runs)
    groups: dict[str, list[dict]] = {}
    for run in runs:
        groups.setdefault(method_key(run, across_tasks=True), []).append(run)
    names = {key: _variant_name(group, models) for key, group in groups.items()}
    shared = collections.Counter(names.values())

    def variant_name(group: list[dict]) -> str:  # a name two models' methods share says which model
        name = names[method_key(group[0], across_tasks=True)]
        label = models[str(group[0].get("model") or "-")]
        return f"{name} {label}" if len(models) > 1 and shared[name] > 1 and label not in name else name

    _unique_names(runs, lambda run: method_key(run, across_tasks=True),
                  lambda group: _with_runtime(variant_name(group), group), "variant")


def _with_runtime(name: str, group: list[dict]) -> str:
    """A method trained through an inference runtime (`prge train --runtime`) says which, so that it
    is told from the same config's eager runs by name: "prge_q4 (onnx)"."""
    runtime = str(group[0].get("runtime") or "eager")
    return name if runtime == "eager" or f"({runtime})" in name else f"{name} ({runtime})"


# Stems of a training file named after its split rather than its data (train.jsonl, training.csv).
SPLIT_FILE_STEMS = ("train", "training", "train_data", "data", "dataset", "validation", "valid", "val", "dev", "eval",
                    "test")


def check_data_files(path: Path, summary: dict) -> None:
    """ValueError naming the summary at `path` when its data_files (prge.data.custom.data_files)
    is not what prge writes: split -> {"path": text, "sha256": 64 hex digits}."""
    files = summary.get("data_files")
    if files is None:
        return
    if not isinstance(files, dict) or not files or not all(
            isinstance(e, dict) and isinstance(e.get("path"), str) and isinstance(e.get("sha256"), str)
            and re.fullmatch(r"[0-9a-f]{64}", e["sha256"]) for e in files.values()):
        raise ValueError(f"{path}: data_files is not what prge writes (split -> {{\"path\": ..., \"sha256\": 64 hex "
                         "digits}): the summary is damaged or was edited")


def data_digests(summary: dict) -> dict[str, str] | None:
    """A custom task's data by content (the summary's data_files, checked by check_data_files:
    split -> sha256), None for a built-in task (its summary has none) or a summary written
    before summaries recorded it."""
    files = summary.get("data_files")
    if not files:
        return None
    data = (summary.get("run_config") or {}).get("data")
    if isinstance(data, dict) and data.get("train_from") == "validation":  # trained on the eval file's records
        files = {split: entry for split, entry in files.items() if split == "eval"} or files  # (a train file unread)
    return {split: entry["sha256"] for split, entry in sorted(files.items())}


def task_source(summary: dict) -> str:
    """What makes a run's task one task in a report: a built-in task's name (wherever its files
    are), a custom task's data by content (data_digests: one file however its path is spelled,
    two files of one name apart), or for summaries without data_files its data as the config
    names it (data_dir / train_file)."""
    if (digests := data_digests(summary)) is not None:
        return json.dumps(["custom", digests])
    data = (summary.get("run_config") or {}).get("data")
    if summary.get("task") != "custom" or not isinstance(data, dict):
        return json.dumps(["task", str(summary.get("task"))])
    return json.dumps(["custom", str(data.get("data_dir") or ""), str(_named_data_file(data) or "")])


def _named_data_file(data: dict):
    """The file a custom task's config names its data by: its training file, or its evaluation
    file under data.train_from: validation (no training file)."""
    return data.get("train_file") or data.get("eval_file")


def task_label(summary: dict) -> str | None:
    """The task a report files a run under: the summary's task, and for a custom task also its
    training file's name (its evaluation file's under data.train_from: validation), from the path
    the summary's data_files recorded (resolved) or else the run's config (every custom task is
    called "custom"),
    "custom: reviews", or its folder's where the file is named after its split
    (reviews/train.jsonl: "custom: reviews"); collect makes two tasks' equal labels unique
    ("custom: reviews (2)")."""
    task = summary.get("task")
    data = (summary.get("run_config") or {}).get("data")
    files = summary.get("data_files") or {}
    recorded = files.get("train") or files.get("eval")  # where it was, resolved (no train file: train_from validation)
    if task != "custom" or not (isinstance(data, dict) or recorded):
        return task
    data = data if isinstance(data, dict) else {}
    folder = Path(str(data["data_dir"])) if data.get("data_dir") else Path()
    name = folder.name
    named = _named_data_file(data)
    if recorded or named:
        data_file = Path(recorded["path"]) if recorded else folder / str(named)
        # a file named after its split is named by its folder: reviews/train.jsonl -> reviews
        split_named = data_file.stem.lower() in SPLIT_FILE_STEMS and data_file.parent.name
        name = data_file.parent.name if split_named else data_file.stem
    return f"custom: {name}" if name else task


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return read_jsonl(path)


def collect(root: str | Path) -> list[dict]:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"runs directory not found: {shown(root)}")
    runs = []
    for path in sorted(root.rglob("summary.json")):
        summary = run_summary.read(path)
        check_data_files(path, summary)
        summary["run"] = path.parent.relative_to(root).as_posix()
        summary["metrics"] = read_metrics(path.parent / "metrics.jsonl")
        summary["run_config"] = read_run_config(path.parent)  # read once: method_key, task_label
        runs.append(summary)
    if not runs:
        left = unfinished(root) + failed(root)
        raise FileNotFoundError(f"no finished runs (summary.json) under {shown(root)}"
                                + (f"; {len(left)} without one: {', '.join(map(visible, left[:5]))}"
                                   f"{' ...' if len(left) > 5 else ''}"
                                   if left else ""))
    # one label per task and data: two custom tasks whose files share a name are told apart
    _unique_names(runs, task_source, lambda group: task_label(group[0]), "task")
    group_methods(runs)
    mark_repeated_seeds(runs)
    return runs


def mark_repeated_seeds(runs: list[dict]) -> None:
    """Sets run["repeats"] to the earlier run (in path order) of the same method (group_methods),
    task and seed, on each later one: a copied run directory, or one run trained again (resumed
    beside an uninterrupted copy, repeated to see a GPU's nondeterminism). The tables count each
    seed once (mean ± std are over seeds: a seed twice would narrow the spread and weigh it
    double) and name the runs they leave out. Runs without a best metric (not training runs)
    are not compared."""
    from prge.reporting.tables import metric_of

    seen: dict[tuple, str] = {}
    for run in runs:
        if metric_of(run) is None:
            continue
        key = (run["method"], run.get("task"), str(run.get("seed")))
        if key in seen:
            run["repeats"] = seen[key]
        else:
            seen[key] = run["run"]


def data_files_note(runs: list[dict]) -> str | None:
    """A note where custom-task runs with data_files (told apart by content) meet runs whose
    summaries predate it (told apart by their configs' paths): the same data is then filed as
    two tasks, and the note says why."""
    custom = [run for run in runs if run.get("data_files") or str(run.get("task", "")).startswith("custom")]
    old = [run["run"] for run in custom if not run.get("data_files")]
    if not old or len(old) == len(custom):
        return None
    return (f"[prge] note: {len(old)} custom-task run(s) ({', '.join(old[:3])}{', ...' if len(old) > 3 else ''}) "
            "have summaries from before prge recorded data_files: they are told apart by their configs' paths, "
            "the newer runs by their data's content, so the same data may be filed as two tasks")


def unfinished(root: str | Path) -> list[str]:
    """Run directories under `root` (holding the config.yaml a run writes first) without a
    summary.json, as paths below root: runs stopped before their last step (a sweep resumes or
    restarts them), runs that failed (a diverged run writes no summary) or still running."""
    root = Path(root)
    return sorted(path.parent.relative_to(root).as_posix() for path in root.rglob("config.yaml")
                  if not (path.parent / "summary.json").exists() and failure_of(path.parent) is None)


def failed(root: str | Path) -> list[str]:
    """Run directories under `root` that a sweep marked as failed (prge.run_dir.mark_failed) and
    that hold no summary.json, as 'path below root (why)'."""
    root = Path(root)
    return [f"{path.parent.relative_to(root).as_posix()} ({failure_of(path.parent)})"
            for path in sorted(root.rglob(FAILED_FILE)) if not (path.parent / "summary.json").exists()]

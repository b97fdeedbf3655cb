"""Keeps the finished runs a device call of experiments/device/paper_accuracy.sh sent back.

    python experiments/device/keep_runs.py OUT/NAME_runs.tgz [--model MODEL] [--steps N] [--tasks "T ..."] [--no-report]

NAME is paper_accuracy for paths.env's DEFAULT_MODEL (SmolLM2-135M) and paper_accuracy_MODEL for
another registered model (MODEL=gemma3-270m on the device: --model gemma3-270m here);
paper_accuracy_stepsN[_MODEL] for the zeroth-order runs at N steps (STEPS=N there: --steps N).
--tasks names the tasks the folder's runs are of where they are not all of the sweep's (TASKS
there, e.g. --steps 20000 --tasks "sst2 rte" for the paper's 20000-step SST-2 and RTE runs): a run
of another task is refused, a folder already holding one is an error, and the report's title
counts the runs of those tasks. A run is
kept only when it is a whole finished run of configs/sweeps/paper_accuracy.yaml exactly as the
device sweep expands it for that model (Target.overrides and device_root; prge.run_dir.finished
compares the whole config but how checkpoints are stored) and its summary and metrics read, so a smoke run (`--set
run.steps=3`), another sweep's or model's run, or a damaged one is refused by name and the kept
copy stays. Each kept run's config.yaml, summary.json, metrics.jsonl and log (no weights) go into
the committed experiments/results/NAME/runs.tgz, replacing an earlier copy of the same run, and a
cold machine's sweep starts from that archive. The archive is unpacked into runs/device/NAME (not
the sweep's own local output root), and `prge report` writes the tables and figures from there
into experiments/results/NAME/. Runs stopped part-way are not kept in runs.tgz. The call's
NAME_stopped.tgz beside the archive (experiments/device/stopped_runs.py: the stopped runs whose
checkpoints came back) goes to .device/stopped/ (git-ignored), which the next session's first
sweep call carries so that paper_accuracy.sh resumes them; when the call sent none back, an
earlier one there is removed (it is out of date: keep each call's archive in the order of the calls).
"""
from __future__ import annotations

import argparse
import gzip
import io
import shutil
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from prge import run_summary
from prge.models import REGISTERED
from prge.jsonl import read_jsonl
from prge.run_dir import RunDirError, finished
from prge.sweep import expand_sweep
from prge.whitespace import shown_value

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its neighbours, also when imported by the tests
from sweep_part import keeps_protocol_steps, part  # noqa: E402 (experiments/device/sweep_part.py)

ROOT = Path(__file__).resolve().parents[2]


def device_paths(env_file: Path = ROOT / "experiments/device/paths.env") -> dict[str, str]:
    """The KEY=VALUE lines of the device scripts' paths file (comments and blank lines skipped)."""
    lines = (line.strip() for line in env_file.read_text().splitlines())
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


DEVICE_PATHS = device_paths()
SWEEP = ROOT / "configs/sweeps/paper_accuracy.yaml"
RUN_FILES = ("config.yaml", "summary.json", "metrics.jsonl")


@dataclass(frozen=True)
class Target:
    """One model's runs of the sweep: as the device runs them (experiments/device/model.sh puts
    the model in DEVICE_MODELS/<model>, paper_accuracy.sh gives --set model.device=cuda and its
    root: a kept run must be one that sweep skips), and where they are kept here."""

    model: str
    name: str  # the folder inside both archives and under experiments/results/, the report's file names
    overrides: tuple
    device_root: str
    kept: Path
    local: Path
    report_out: Path


def results_name(model: str, steps: int | None = None) -> str:
    """The folder a model's runs are kept in, on the machine and here (paper_accuracy.sh asks
    `keep_runs.py --print-name`): paper_accuracy for the default model, paper_accuracy_MODEL else;
    runs at another step count (paper_accuracy.sh's STEPS) in paper_accuracy_stepsN[_MODEL]."""
    name = "paper_accuracy" + (f"_steps{steps}" if steps else "")
    return name if model == DEVICE_PATHS["DEFAULT_MODEL"] else f"{name}_{model}"


def target(model: str, root: Path, steps: int | None = None) -> Target:
    name = results_name(model, steps)
    steps_setting = (("run.steps", str(steps)),) if steps else ()
    return Target(model=model, name=name,
                  overrides=(("model.name", f"{DEVICE_PATHS['DEVICE_MODELS']}/{model}"), ("model.device", "cuda"),
                             *steps_setting),
                  device_root=f"{DEVICE_PATHS['DEVICE_RUNS']}/{name}",
                  kept=root / "experiments/results" / name / "runs.tgz", local=root / "runs/device" / name,
                  report_out=root / "experiments/results" / name)


class KeepError(Exception):
    """An input this script cannot take: the message names the file."""


def unpack(archive: Path, into: Path, name: str) -> Path:
    """The archive's `name`/ folder, unpacked into `into`; KeepError naming the archive."""
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise KeepError(f"{archive}: not a readable .tgz of runs ({e})") from None
    if not (into / name).is_dir():
        raise KeepError(f"{archive}: holds no {name}/ folder of runs (as paper_accuracy.sh packs them; "
                        "another model's runs need --model)")
    return into / name


def expected_runs(where: Target) -> dict:
    """Run name -> RunConfig of every run of the sweep as the device runs it; with a step count
    of its own (run.steps among the overrides), the zeroth-order runs only (FO-SGD keeps the
    protocol's 1000 steps: sweep_part.keeps_protocol_steps)."""
    runs = expand_sweep(SWEEP, list(where.overrides), where.device_root)
    other_steps = any(key == "run.steps" for key, _ in where.overrides)
    return {Path(c.run.output_dir).name: c for _, c in runs
            if not (other_steps and keeps_protocol_steps(c.estimator.kind))}


def checked_tasks(given: list[str] | None) -> list[str] | None:
    """The tasks --tasks names (each value split at spaces and commas), in the sweep's order; None
    without --tasks; ValueError where its values name no task, or naming a task the sweep does not
    have or one given twice (sweep_part.part's checks of TASKS)."""
    if given is None:
        return None
    tasks = [t for value in given for t in value.replace(",", " ").split()]
    if not tasks:  # e.g. an unset "$TASKS": all tasks is said by leaving --tasks out
        raise ValueError(f"--tasks {shown_value(' '.join(given))}: names no task")
    spec = yaml.safe_load(SWEEP.read_text())
    try:
        part(spec, tasks=tasks)
    except ValueError as e:
        raise ValueError(str(e).replace("TASKS:", "--tasks:", 1)) from None
    return [t for t in spec["grid"]["data.task"] if t in tasks]


def listed(names: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def why_not_kept(run: Path, expected: dict, tasks: list[str] | None = None) -> str | None:
    """None when `run` is a whole finished run of the sweep as the device runs it (of one of
    `tasks`, where given), else why not."""
    if run.name not in expected:
        return f"no run of {SWEEP.name} is named {run.name}"
    if tasks and expected[run.name].data.task not in tasks:
        return f"a run of task {expected[run.name].data.task}, not of --tasks \"{' '.join(tasks)}\""
    for name in RUN_FILES:
        if not (run / name).is_file() or (run / name).stat().st_size == 0:
            return f"{name} is missing or empty"
    try:
        run_summary.read(run / "summary.json")
        read_jsonl(run / "metrics.jsonl")
        finished(run, expected[run.name].to_yaml())  # True here (summary.json is there), or raises
    except RunDirError as e:  # another config: name its first difference
        return "other settings than the sweep's" + str(e).split("other settings", 1)[-1].split(";")[0]
    except (ValueError, OSError) as e:
        return str(e)
    return None


def cards(root: Path) -> str:
    """The GPUs the runs under `root` name in their summaries (device_name), for the report's
    title: "on NVIDIA H200", "on NVIDIA H100 80GB HBM3 and NVIDIA H200 (card not recorded for
    3 runs)": summaries older than the field name none."""
    named, unnamed = set(), 0
    for summary in sorted(root.glob("*/summary.json")):
        name = run_summary.read(summary).get("device_name")
        if name:
            named.add(str(name))
        else:
            unnamed += 1
    if not named:
        return "card not recorded"
    runs = f"{unnamed} run{'s' if unnamed != 1 else ''}"
    return "on " + " and ".join(sorted(named)) + (f" (card not recorded for {runs})" if unnamed else "")


def pack(folder: Path, archive: Path, name: str) -> None:
    """The same runs give the same bytes: sorted members, no times or owners; the folder itself
    first, so that an archive of no runs yet still unpacks to its (empty) folder."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in [folder, *sorted(folder.rglob("*"))]:
            member = path.relative_to(folder).as_posix()
            info = tar.gettarinfo(str(path), arcname=name if member == "." else f"{name}/{member}")
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            info.mode = 0o755 if path.is_dir() else 0o644
            if path.is_file():
                with path.open("rb") as data:
                    tar.addfile(info, data)
            else:
                tar.addfile(info)
    tmp = archive.with_suffix(".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as out:
        out.write(buffer.getvalue())
    tmp.replace(archive)


def keep_stopped_runs(archive: Path, carried: Path) -> None:
    """Copies a call's stopped-runs archive into `carried` (what the next session carries) once it
    unpacks whole here (stopped_runs.unpack: checksum, members, each run's files), or removes the one
    there when the call sent none back. Raises KeepError for an archive that does not unpack."""
    from stopped_runs import unpack  # experiments/device/stopped_runs.py, beside this script

    target = carried / archive.name
    if archive.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            try:
                unpack(archive, Path(tmp) / archive.name.removesuffix("_stopped.tgz"))
            except ValueError as e:
                raise KeepError(f"stopped runs not kept: {e}") from None
        carried.mkdir(parents=True, exist_ok=True)
        shutil.copy2(archive, target)
        print(f"stopped runs' checkpoints kept in {target} ({archive.stat().st_size / 2**20:.2f} MiB): carry "
              f"{carried.relative_to(ROOT) if carried.is_relative_to(ROOT) else carried} in the next session's "
              "first sweep call (not with a model part: that call has no room for it)")
    elif target.is_file():
        target.unlink()
        print(f"no stopped runs came back with this call: removed the earlier {target}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("archive", type=Path, nargs="?", help="NAME_runs.tgz from a device call")
    parser.add_argument("--model", default=DEVICE_PATHS["DEFAULT_MODEL"],
                        help="the registered model the device sweep ran (MODEL there; default %(default)s)")
    parser.add_argument("--steps", type=int, help="the step count the device sweep's zeroth-order runs took "
                        "(STEPS there; default: the sweep's)")
    parser.add_argument("--tasks", action="append", metavar='"TASK ..."', help="the tasks the folder's runs "
                        "are of (TASKS there, e.g. \"sst2 rte\"; default: all of the sweep's)")
    parser.add_argument("--no-report", action="store_true")
    parser.add_argument("--print-name", action="store_true", help="print NAME for --model and stop")
    args = parser.parse_args()
    if args.model not in REGISTERED:
        print(f"keep_runs: error: --model {args.model}: not a registered model ({', '.join(REGISTERED)})",
              file=sys.stderr)
        return 2
    if args.steps is not None and args.steps < 1:
        print(f"keep_runs: error: --steps {args.steps}: not a positive step count", file=sys.stderr)
        return 2
    try:
        tasks = checked_tasks(args.tasks)
    except ValueError as e:
        print(f"keep_runs: error: {e}", file=sys.stderr)
        return 2
    if args.print_name:
        print(results_name(args.model, args.steps))
        return 0
    if args.archive is None:
        parser.error("the archive (NAME_runs.tgz) is required")
    where = target(args.model, ROOT, args.steps)
    expected = expected_runs(where)
    wanted = {name for name, config in expected.items() if not tasks or config.data.task in tasks}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            new = unpack(args.archive, Path(tmp) / "new", where.name)
            kept = (unpack(where.kept, Path(tmp) / "kept", where.name) if where.kept.is_file()
                    else Path(tmp) / "kept" / where.name)
        except KeepError as e:
            print(f"keep_runs: error: {e}", file=sys.stderr)
            return 2
        kept.mkdir(parents=True, exist_ok=True)
        others = sorted(p.name for p in kept.iterdir() if p.is_dir() and p.name in expected and p.name not in wanted)
        if others:  # the report would show them under a title that does not count them
            print(f"keep_runs: error: {where.kept.relative_to(ROOT)} holds runs of other tasks than --tasks "
                  f"\"{' '.join(tasks)}\" ({', '.join(others)}): give their tasks too", file=sys.stderr)
            return 2
        added, refused, part_way = [], [], []
        for run in sorted(p for p in new.iterdir() if p.is_dir()):
            if not (run / "summary.json").exists():
                part_way.append(run.name)
                continue
            reason = why_not_kept(run, expected, tasks)
            if reason:  # paths inside the unpacked archive named as the archive's members
                refused.append(f"{run.name}: {reason.replace(str(new.parent) + '/', f'{args.archive}:')}")
                continue
            shutil.rmtree(kept / run.name, ignore_errors=True)
            (kept / f"{run.name}.log").unlink(missing_ok=True)
            (kept / run.name).mkdir()
            for name in RUN_FILES:
                shutil.copy2(run / name, kept / run.name / name)
            log = run.with_name(run.name + ".log")
            if log.is_file():
                shutil.copy2(log, kept / log.name)
            added.append(run.name)
        where.kept.parent.mkdir(parents=True, exist_ok=True)
        pack(kept, where.kept, where.name)
        shutil.rmtree(where.local, ignore_errors=True)
        shutil.copytree(kept, where.local)
    try:
        keep_stopped_runs(args.archive.with_name(f"{where.name}_stopped.tgz"), ROOT / ".device/stopped")
    except KeepError as e:
        refused.append(str(e))
    count = sum(1 for p in where.local.iterdir() if p.is_dir() and p.name in wanted)
    print(f"{len(added)} finished runs taken from {args.archive}; {count} of {len(wanted)} kept in "
          f"{where.kept.relative_to(ROOT)} ({where.kept.stat().st_size / 2**20:.2f} MiB)")
    if part_way:
        print(f"not kept, stopped part-way ({len(part_way)}): {', '.join(part_way)}")
    for line in refused:
        print(f"keep_runs: refused {line}", file=sys.stderr)
    if not args.no_report:
        from prge.cli import main as prge_main

        done = "all" if count == len(wanted) else "part done so far:"
        on_tasks = f" for {listed(tasks)}" if tasks else ""
        code = prge_main(["report", str(where.local), "--out", str(where.report_out), "--title",
                          f"Paper accuracy protocol{f' at {args.steps} steps' if args.steps else ''}{on_tasks}, "
                          f"{done} {count} of {len(wanted)} runs, "
                          f"{REGISTERED[args.model].title}, {cards(where.local)}"])
        if code:
            return code
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())

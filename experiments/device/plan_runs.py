"""Which of the paper sweep's unfinished runs to start in one device call: those estimated to end
within it (a run cut by a call's end whose checkpoint does not travel, MeZO's full-parameter
weights under run.checkpoint_format: weights, restarts on the next machine), then, on the GPU time they leave, one run whose checkpoint travels
(experiments/device/stopped_runs.py), stopped by the call's end.

    python experiments/device/plan_runs.py SWEEP.yaml RUNS_ROOT SECONDS [--gpus N] [--set KEY=VALUE ...]
        [--timings-from FULL_SWEEP.yaml] [--scale-from OTHER_MODELS_RUNS]

prints the run names to start (the chosen ones and the one filled in), one per line in the sweep's
order, for `prge sweep SWEEP.yaml --only NAME ...`, and on stderr the chosen runs' number and
estimated length, the run filled in, and the runs it cannot plan (no estimate, or longer than a
call). `--set`: the overrides the device sweep runs with, so that a finished run counts
only with the same settings (a finished run of other settings is an error, as in `prge sweep`).
`--timings-from`: a larger sweep with the same output root whose finished runs are also estimated
from (a part of the grid, as paper_accuracy.sh's VARIANTS=mezo, lacks the reference method's runs).
`--scale-from`: the finished runs of the same sweep on another model (a folder of run folders,
e.g. SmolLM2's for a Gemma sweep), for runs nothing under RUNS_ROOT goes by (below).

A run's time is estimated from the finished runs under RUNS_ROOT (any seed) of the same method
and task: the shortest, preferring runs that had a GPU to themselves (SHARED_GPU_RUNS had not:
their times, divided by SHARED_SLOWDOWN, are used only where nothing else is there), a resumed run's
wall time plus its steps before the resume at its mean step time; plus START_SECONDS for the
process start, which wall_seconds does not count. A method that has not run a task yet is
scaled from its reference method's run of it (EXTRAPOLATE_FROM): that run's time outside its
steps, plus this run's steps at the reference's step time times the largest step-time ratio of
the two methods over the tasks where both ran alone, times EXTRAPOLATION_MARGIN. A run stopped
part-way under RUNS_ROOT (a warm machine's earlier call) is estimated for the steps after its
checkpoint, where the sweep resumes it. Where neither goes, the other model's run of the same
method and task (`--scale-from`) is scaled by the largest ratio of this model's wall time to the
other's over the runs of that method both have finished alone, times EXTRAPOLATION_MARGIN (a
method this model has not finished once is not planned). Runs are taken
in this order: those stopped part-way first (a checkpoint here: their steps partly spent, and a checkpoint that
travels is not carried from call to call unfinished), then seed by seed (the grid's first seed
first), then in the sweep's order; each is kept if the
sweep's own schedule (in its order, each run on the first GPU free) still ends within FILL of
SECONDS. Then, where the chosen runs leave a GPU free FILL_MARGIN seconds or more before the
call's end, the plan adds one more run, not expected to end in time, whose checkpoint travels
(travels: the LoRA-FA methods, and MeZO under run.checkpoint_format: updates): among the unfinished runs that come after every chosen
one in the sweep's order (so that it starts last and delays none of them), one stopped part-way
first (a checkpoint here already), else the first by seed, with or without an estimate. It stops at
the call's end and resumes in the next call or session. One only: stopped_runs.py sends back
15 MiB, about one LoRA-FA checkpoint at SmolLM2's or Gemma 3 270M's size."""
from __future__ import annotations

import argparse
import heapq
import re
import sys
from pathlib import Path

from prge import checkpoints, run_summary
from prge.overrides import parse_assignment
from prge.run_dir import finished
from prge.sweep import expand_sweep

# Python start, model load and data reading before a run's clock starts: session 19's calls ran
# 565 and 285 s for runs whose wall_seconds summed to ~490 and ~230 (10 and 6 runs started), so
# 7-10 s a run (20 before that, when the estimates came out 20-40 s long a run).
START_SECONDS = 10.0
EXTRAPOLATION_MARGIN = 1.25
FILL = 0.85  # of the call's sweep time: room for the sweep's own start and uneven runs
# The least time left on a GPU for a run filled in to start, evaluate at step 0 and write a
# checkpoint (a run stopped before its first step writes none).
FILL_MARGIN = 60.0
# MeZO runs float32 full forwards as FO-SGD does (its step took 0.70-0.71 x FO-SGD's on the five
# tasks both ran alone); the bfloat16 LoRA-FA methods scale from ZO LoRA-FA q = 1.
EXTRAPOLATE_FROM = {"mezo": "fo_sgd_lora_fa"}
DEFAULT_REFERENCE = "lora_fa_q1"
# SmolLM2-135M's runs that shared their GPU with two others (experiments/results/paper_accuracy/
# README.md): session 16's six ZO q = 1 runs and session 18's seventeen; another model's runs of the
# same names ran alone (session 29's Gemma plan took its FO-SGD MRPC as shared, estimated MeZO MRPC
# at 130 s where it needed ~200, and the call's end cut it 65 steps before its end). Their times are divided by
# SHARED_SLOWDOWN, the smallest slowdown measured against the same runs alone (wall 2.4-3.8 x,
# step 2.75-4.2 x), so that what is left still over-estimates.
SHARED_SLOWDOWN = 2.4
SHARED_GPU_MODEL = "smollm2-135m"  # prge.models.REGISTERED's name; a run's model is its summary's model folder
SHARED_GPU_RUNS = frozenset(
    [f"lora_fa_q1-task{t}-seed42" for t in ("sst2", "rte", "wsc", "copa", "cb", "wic")]
    + [f"fo_sgd_lora_fa-task{t}-seed42" for t in ("arc_easy", "arc_challenge", "mrpc", "multirc", "wnli")]
    + [f"fo_sgd_lora_fa-task{t}-seed1337" for t in ("arc_easy", "arc_challenge", "cb", "copa", "mrpc", "rte",
                                                    "sst2", "wic", "wnli", "wsc")]
    + ["mezo-taskcopa-seed1337", "mezo-tasksst2-seed1337"])
LABEL = re.compile(r"^(?P<method>.+)-task(?P<task>.+)-seed(?P<seed>\d+)$")


def parts(label: str) -> tuple[str, str, int]:
    """'mezo-taskcb-seed42' -> ('mezo', 'cb', 42). Raises ValueError for another layout."""
    match = LABEL.match(label)
    if not match:
        raise ValueError(f"run {label!r}: expected METHOD-taskTASK-seedSEED")
    return match["method"], match["task"], int(match["seed"])


class Timing:
    """A finished run's time: `wall` seconds in all (a resumed run's part before the resume
    added back at its mean step time), `step` seconds a step, `fixed` = wall - steps * step;
    a run that shared its GPU (`shared`) has all three divided by SHARED_SLOWDOWN."""

    def __init__(self, summary: dict, shared: bool = False):
        steps, step = summary.get("steps"), summary.get("mean_step_seconds")
        wall, resumed_after = summary.get("wall_seconds"), summary.get("resumed_after_step") or 0
        if not (isinstance(steps, int) and steps > 0 and isinstance(step, (int, float)) and step > 0
                and isinstance(wall, (int, float)) and wall > 0 and 0 <= resumed_after < steps):
            raise ValueError("no usable steps, mean_step_seconds and wall_seconds")
        self.shared = shared
        slowdown = SHARED_SLOWDOWN if shared else 1.0
        self.step = float(step) / slowdown
        self.wall = (float(wall) + resumed_after * float(step)) / slowdown
        self.fixed = max(self.wall - steps * self.step, 0.0)


def shared_gpu(label: str, summary: dict) -> bool:
    """Whether the run `label` (its summary) shared its GPU: one of SHARED_GPU_RUNS of SHARED_GPU_MODEL."""
    return label in SHARED_GPU_RUNS and Path(str(summary.get("model") or "")).name == SHARED_GPU_MODEL


def timings(done: dict[str, dict]) -> dict[tuple[str, str], Timing]:
    """(method, task) -> the shortest of its finished runs (summaries by label), runs that had a
    GPU to themselves first."""
    best: dict[tuple[str, str], tuple[bool, float, Timing]] = {}
    for label, summary in done.items():
        try:
            method, task, _ = parts(label)
            timing = Timing(summary, shared=shared_gpu(label, summary))
        except ValueError:
            continue  # not a run of this layout, or one without times: nothing to go by
        key = (timing.shared, timing.wall)
        if (method, task) not in best or key < best[method, task][:2]:
            best[method, task] = (*key, timing)
    return {k: v[2] for k, v in best.items()}


def estimate(label: str, steps: int, times: dict[tuple[str, str], Timing]) -> float | None:
    """Estimated seconds of a run of `steps` steps, START_SECONDS included; None when nothing to
    go by."""
    method, task, _ = parts(label)
    if (method, task) in times:
        own = times[method, task]
        return own.fixed + steps * own.step + START_SECONDS
    reference = EXTRAPOLATE_FROM.get(method, DEFAULT_REFERENCE)
    ratios = [times[method, t].step / times[reference, t].step for (m, t) in times
              if m == method and (reference, t) in times
              and not times[method, t].shared and not times[reference, t].shared]
    if not ratios or (reference, task) not in times:
        return None
    ref = times[reference, task]
    return ref.fixed + steps * ref.step * max(ratios) * EXTRAPOLATION_MARGIN + START_SECONDS


def model_ratios(times: dict[tuple[str, str], Timing], other: dict[tuple[str, str], Timing]) -> dict[str, float]:
    """method -> the largest ratio of this model's wall time to the other model's over the tasks
    on which both have run the method alone."""
    ratios: dict[str, float] = {}
    for (method, task), own in times.items():
        theirs = other.get((method, task))
        if theirs is not None and not own.shared and not theirs.shared:
            ratios[method] = max(ratios.get(method, 0.0), own.wall / theirs.wall)
    return ratios


def scaled_estimate(label: str, steps: int, other: dict[tuple[str, str], Timing],
                    ratios: dict[str, float]) -> float | None:
    """Estimated seconds of a run from the other model's run of its method and task (see the
    module's text); None when there is none or no ratio for the method."""
    method, task, _ = parts(label)
    if (method, task) not in other or method not in ratios:
        return None
    theirs = other[method, task]
    return (theirs.fixed + steps * theirs.step) * ratios[method] * EXTRAPOLATION_MARGIN + START_SECONDS


def remaining_steps(run_dir: Path, steps: int) -> int:
    """The steps of a `steps`-step run left after the checkpoint in `run_dir` (its pointer
    checkpoint.json's step, where the sweep resumes it); all of them when it has none or the
    pointer does not read."""
    try:
        pointer = checkpoints.read_pointer(run_dir)
    except (OSError, ValueError):
        return steps
    done = pointer["step"] if pointer else None
    return steps - done if done is not None and 0 <= done <= steps else steps


def gpu_ends(durations: list[float], gpus: int) -> list[float]:
    """When each GPU's last run ends, these runs started in this order each on the first GPU free."""
    free = [0.0] * gpus
    for duration in durations:
        heapq.heappush(free, heapq.heappop(free) + duration)
    return free


def schedule_length(durations: list[float], gpus: int) -> float:
    """When the last of these runs ends, started in this order each on the first GPU free."""
    return max(gpu_ends(durations, gpus))


def plan(pending: list[str], estimates: dict[str, float], seconds: float, gpus: int,
         seed_order: list[int], stopped: set[str] = frozenset()) -> list[str]:
    """The runs of `pending` (in the sweep's order) to start in a call of `seconds` on `gpus`:
    the runs stopped part-way first (`stopped`: a checkpoint here already, their steps partly
    spent), then seed by seed in `seed_order`."""
    by_priority = sorted((label for label in pending if label in estimates),
                         key=lambda label: (label not in stopped, seed_order.index(parts(label)[2])))
    chosen: set[str] = set()
    for label in by_priority:
        trial = [run for run in pending if run in chosen or run == label]
        if schedule_length([estimates[run] for run in trial], gpus) <= FILL * seconds:
            chosen.add(label)
    return [run for run in pending if run in chosen]


def travels(config, run_dir: Path | None = None) -> bool:
    """Whether a run's checkpoint comes back from the machine (stopped_runs.py packs ~10 MiB at
    most a run): adapters, or MeZO's steps' updates (run.checkpoint_format: updates), not MeZO's
    full-parameter weights, as a MeZO run stopped in `run_dir` before its sweep asked for updates
    keeps checkpointing them."""
    if config.estimator.kind != "mezo":
        return True
    try:
        pointer = checkpoints.read_pointer(run_dir) if run_dir is not None else None
    except (OSError, ValueError):
        pointer = None
    weights = pointer is not None and (Path(run_dir) / str(pointer.get("directory", "")) / checkpoints.TENSORS).exists()
    return config.run.checkpoint_format == "updates" and not weights


def fill(pending: list[str], chosen: list[str], estimates: dict[str, float], seconds: float, gpus: int,
         seed_order: list[int], traveling: set[str], stopped: set[str] = frozenset()) -> list[str]:
    """The run of `traveling` to start after `chosen` when a GPU is free FILL_MARGIN before
    `seconds` (see the module's text; `stopped`: runs with a checkpoint already, taken first), as a
    list of at most one."""
    if min(gpu_ends([estimates[r] for r in chosen], gpus)) > seconds - FILL_MARGIN:
        return []
    after = pending.index(chosen[-1]) + 1 if chosen else 0
    candidates = sorted((run for run in pending[after:] if run in traveling),
                        key=lambda run: (run not in stopped, seed_order.index(parts(run)[2])))
    return candidates[:1]


def finished_runs(root: Path, runs: list) -> dict[str, dict]:
    """Summaries (by label) of the runs of an expanded sweep finished under `root`. Raises
    RunDirError for a finished run of other settings."""
    return {label: run_summary.read(root / label / "summary.json")
            for label, config in runs if finished(root / label, config.to_yaml())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep")
    parser.add_argument("root", help="the sweep's output root (its finished runs)")
    parser.add_argument("seconds", type=float, help="the call's sweep time")
    parser.add_argument("--gpus", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--timings-from", metavar="SWEEP", help="a sweep over the same root whose finished runs "
                        "the estimates also go by (default: SWEEP's alone)")
    parser.add_argument("--scale-from", metavar="DIR", type=Path, help="another model's finished runs of the sweep "
                        "(run folders), scaled for runs nothing under root goes by")
    args = parser.parse_args(argv)
    try:
        if args.gpus < 1 or args.seconds <= 0:
            raise ValueError(f"--gpus {args.gpus}, seconds {args.seconds:g}: both must be positive")
        root = Path(args.root)
        overrides = [parse_assignment(s) for s in args.set]
        runs = expand_sweep(args.sweep, overrides, output_root=str(root))
        labels = [label for label, _ in runs]  # each run's directory name
        steps = {label: config.run.steps for label, config in runs}
        traveling = {label for label, config in runs if travels(config, root / label)}
        done = finished_runs(root, runs)
        timed = finished_runs(root, expand_sweep(args.timings_from, overrides, output_root=str(root))) \
            if args.timings_from else {}
        if args.scale_from and not args.scale_from.is_dir():
            raise ValueError(f"--scale-from {args.scale_from}: not a folder of runs")
        # The other model's runs were checked when they were kept (keep_runs.py): read as they are.
        other = {path.parent.name: run_summary.read(path)
                 for path in sorted(args.scale_from.glob("*/summary.json"))} if args.scale_from else {}
    except (ValueError, OSError) as e:  # RunDirError and ConfigError among them; a sweep file not found
        print(f"plan_runs: error: {e}", file=sys.stderr)
        return 2
    pending = [label for label in labels if label not in done]
    times = timings({**timed, **done})
    other_times = timings(other)
    ratios = model_ratios(times, other_times)
    estimates = {}
    for label in pending:
        left = remaining_steps(root / label, steps[label])
        e = estimate(label, left, times)
        e = e if e is not None else scaled_estimate(label, left, other_times, ratios)
        if e is not None:
            estimates[label] = e
    seed_order = list(dict.fromkeys(parts(label)[2] for label in labels))  # the grid's order
    stopped = {label for label in pending if remaining_steps(root / label, steps[label]) < steps[label]}
    chosen = plan(pending, estimates, args.seconds, args.gpus, seed_order, stopped)
    filled = fill(pending, chosen, estimates, args.seconds, args.gpus, seed_order, traveling, stopped)
    unknown = [label for label in pending if label not in estimates]
    too_long = [label for label in pending  # a run whose checkpoint travels goes on in the next call anyway
                if estimates.get(label, 0) > FILL * args.seconds and label not in traveling]
    length = schedule_length([estimates[r] for r in chosen], args.gpus) if chosen else 0
    print(f"plan_runs: {len(chosen)} of {len(pending)} unfinished runs ({len(done)} finished), estimated "
          f"{length:.0f} s of {args.seconds:.0f} on {args.gpus} GPU(s)", file=sys.stderr)
    if filled:
        print(f"plan_runs: then, until the call's end (they stop with a checkpoint that travels): "
              f"{', '.join(filled)}", file=sys.stderr)
    if too_long:
        print(f"plan_runs: longer than a call, and their checkpoints do not travel (run them with PLAN=0 on a "
              f"machine that stays warm, so they resume): " + ", ".join(f"{r} ({estimates[r]:.0f} s)" for r in too_long), file=sys.stderr)
    if unknown:
        print(f"plan_runs: no estimate (no finished run to go by): {', '.join(unknown)}", file=sys.stderr)
    print("\n".join(run for run in pending if run in set(chosen) | set(filled)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

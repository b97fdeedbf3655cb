"""Which of the paper sweep's unfinished runs fit in one device call, so that a call ends with
every run it started finished (a run cut by a call's end is lost: its checkpoint stays on the
machine).

    python experiments/device/plan_runs.py SWEEP.yaml RUNS_ROOT SECONDS [--gpus N]

prints the chosen run names, one per line, for `prge sweep SWEEP.yaml --only NAME ...`, and a
line on stderr with their number and estimated length. A run's time is estimated from the
finished runs under RUNS_ROOT: the shortest run of the same method and task with any seed
(a resumed run's part scaled to its steps, where no whole run is there), plus START_SECONDS for the process start, which wall_seconds does not count; a
method that has not run a task yet is scaled from ZO LoRA-FA q = 1's run of it by the largest
ratio between the two over the tasks both have run (times EXTRAPOLATION_MARGIN). Runs are taken
seed by seed (the grid's first seed first, so seeds complete in order), then in the sweep's
order; each is kept if the sweep's own schedule (in its order, each run on the first GPU free)
still ends within FILL of SECONDS."""
from __future__ import annotations

import argparse
import heapq
import re
import sys
from pathlib import Path

from prge import run_summary
from prge.sweep import expand_sweep

START_SECONDS = 20.0  # python start, model load and data reading before a run's clock starts
EXTRAPOLATION_MARGIN = 1.25
FILL = 0.85  # of the call's sweep time: room for the sweep's own start and uneven runs
REFERENCE_METHOD = "lora_fa_q1"
LABEL = re.compile(r"^(?P<method>.+)-task(?P<task>.+)-seed(?P<seed>\d+)$")


def parts(label: str) -> tuple[str, str, int]:
    """'mezo-taskcb-seed42' -> ('mezo', 'cb', 42). Raises ValueError for another layout."""
    match = LABEL.match(label)
    if not match:
        raise ValueError(f"run {label!r}: expected METHOD-taskTASK-seedSEED")
    return match["method"], match["task"], int(match["seed"])


def run_seconds(done: dict[str, dict]) -> dict[tuple[str, str], float]:
    """(method, task) -> the shortest wall_seconds of its whole finished runs (summaries by label).
    A method and task with only resumed runs (whose wall time covers the part after the resume)
    get that part's time scaled to all the steps."""
    whole: dict[tuple[str, str], float] = {}
    resumed: dict[tuple[str, str], float] = {}
    for label, summary in done.items():
        wall, steps, after = summary.get("wall_seconds"), summary.get("steps"), summary.get("resumed_after_step") or 0
        if not wall or not steps or after >= steps:
            continue
        method, task, _ = parts(label)
        into = resumed if after else whole
        into[method, task] = min(into.get((method, task), float("inf")), float(wall) * steps / (steps - after))
    return {**resumed, **whole}


def estimate(label: str, seconds: dict[tuple[str, str], float]) -> float | None:
    """Estimated seconds of a run, START_SECONDS included; None when nothing to go by."""
    method, task, _ = parts(label)
    if (method, task) in seconds:
        return seconds[method, task] + START_SECONDS
    ratios = [s / seconds[REFERENCE_METHOD, t] for (m, t), s in seconds.items()
              if m == method and (REFERENCE_METHOD, t) in seconds]
    if not ratios or (REFERENCE_METHOD, task) not in seconds:
        return None
    return seconds[REFERENCE_METHOD, task] * max(ratios) * EXTRAPOLATION_MARGIN + START_SECONDS


def schedule_length(durations: list[float], gpus: int) -> float:
    """When the last of these runs ends, started in this order each on the first GPU free."""
    free = [0.0] * gpus
    for duration in durations:
        heapq.heappush(free, heapq.heappop(free) + duration)
    return max(free)


def plan(pending: list[str], estimates: dict[str, float], seconds: float, gpus: int,
         seed_order: list[int]) -> list[str]:
    """The runs of `pending` (in the sweep's order) to start in a call of `seconds` on `gpus`,
    seed by seed in `seed_order`."""
    by_priority = sorted((label for label in pending if label in estimates),
                         key=lambda label: seed_order.index(parts(label)[2]))
    chosen: set[str] = set()
    for label in by_priority:
        trial = [run for run in pending if run in chosen or run == label]
        if schedule_length([estimates[run] for run in trial], gpus) <= FILL * seconds:
            chosen.add(label)
    return [run for run in pending if run in chosen]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep")
    parser.add_argument("root", help="the sweep's output root (its finished runs)")
    parser.add_argument("seconds", type=float, help="the call's sweep time")
    parser.add_argument("--gpus", type=int, default=1)
    args = parser.parse_args(argv)
    root = Path(args.root)
    labels = [Path(config.run.output_dir).name for _, config in expand_sweep(args.sweep, output_root=str(root))]
    done = {label: run_summary.read(root / label / "summary.json")
            for label in labels if (root / label / "summary.json").is_file()}
    pending = [label for label in labels if label not in done]
    seconds = run_seconds({**done, **{p.parent.name: run_summary.read(p) for p in root.glob("*/summary.json")}})
    estimates = {label: e for label in pending if (e := estimate(label, seconds)) is not None}
    seed_order = list(dict.fromkeys(parts(label)[2] for label in labels))  # the grid's order
    chosen = plan(pending, estimates, args.seconds, args.gpus, seed_order)
    unknown = [label for label in pending if label not in estimates]
    print(f"plan_runs: {len(chosen)} of {len(pending)} unfinished runs, estimated "
          f"{schedule_length([estimates[r] for r in chosen], args.gpus) if chosen else 0:.0f} s of {args.seconds:.0f} "
          f"on {args.gpus} GPU(s)" + (f"; no estimate for {', '.join(unknown)}" if unknown else ""), file=sys.stderr)
    print("\n".join(chosen))
    return 0


if __name__ == "__main__":
    sys.exit(main())

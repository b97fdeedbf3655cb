"""A part of the paper sweep (configs/sweeps/paper_accuracy.yaml) for paper_accuracy.sh: fewer tasks,
seeds or methods (same run names, so the parts add up), or the zeroth-order methods at another step
count. The one place that decides which methods a sweep at another step count leaves out
(keeps_protocol_steps; keep_runs.py asks it too).

    TASKS="sst2 rte" SEEDS="42" VARIANTS="mezo" STEPS=20000 python experiments/device/sweep_part.py OUT.yaml

writes the part to OUT.yaml (the full sweep's keys, its base path unchanged, so OUT.yaml sits beside
it); a mistake (an unknown method, FO-SGD named with STEPS, a task or seed not in the sweep, a name
given twice) exits 2 naming it, writing nothing."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

SWEEP = Path(__file__).resolve().parents[2] / "configs/sweeps/paper_accuracy.yaml"
# FO-SGD runs the protocol's 1000 steps whatever the zeroth-order methods' step count: a sweep at
# another step count (STEPS) leaves out the methods of these estimator kinds.
PROTOCOL_STEPS_ESTIMATORS = frozenset({"first_order"})


def keeps_protocol_steps(estimator_kind: str) -> bool:
    """Whether a method of this estimator.kind keeps the protocol's steps (is no run of a sweep at
    another step count)."""
    return estimator_kind in PROTOCOL_STEPS_ESTIMATORS


def part(spec: dict, tasks: list[str] | None = None, seeds: list[int] | None = None,
         variants: list[str] | None = None, other_steps: bool = False) -> dict:
    """The sweep `spec` (a paper_accuracy.yaml mapping) narrowed to `tasks`, `seeds` and `variants`
    (names, in the order given), and without the methods that keep the protocol's steps where
    `other_steps`. Raises ValueError naming a task, seed or method the sweep does not have or that
    is given twice, or a method named in `variants` that a sweep at another step count cannot run."""
    spec = {**spec, "grid": dict(spec["grid"]), "variants": list(spec["variants"])}
    for wanted, what in ((tasks, "TASKS"), (seeds, "SEEDS"), (variants, "VARIANTS")):
        repeated = sorted({w for w in wanted or [] if wanted.count(w) > 1}, key=str)
        if repeated:  # the sweep would refuse two runs of one name, naming the part file's line
            raise ValueError(f"{what}: {repeated} given more than once")
    for key, wanted, what in (("data.task", tasks, "TASKS"), ("run.seed", seeds, "SEEDS")):
        if wanted:
            unknown = [w for w in wanted if w not in spec["grid"][key]]
            if unknown:
                raise ValueError(f"{what}: {unknown} not in the sweep's {key} ({spec['grid'][key]})")
            spec["grid"][key] = list(wanted)
    by_name = {v["name"]: v for v in spec["variants"]}
    if variants:
        unknown = [n for n in variants if n not in by_name]
        if unknown:
            raise ValueError(f"VARIANTS: unknown {unknown} (the sweep's: {', '.join(by_name)})")
        spec["variants"] = [by_name[n] for n in variants]
    if other_steps:
        fixed = [v["name"] for v in spec["variants"] if keeps_protocol_steps(v.get("estimator.kind", ""))]
        if variants and fixed:
            raise ValueError(f"VARIANTS: {fixed} with STEPS: it runs the protocol's steps (the sweep without STEPS)")
        spec["variants"] = [v for v in spec["variants"] if v["name"] not in fixed]
    return spec


def main(out: str) -> int:
    env = os.environ
    try:
        seeds = [int(s) for s in env.get("SEEDS", "").split()]
    except ValueError:
        print(f"sweep_part: SEEDS={env['SEEDS']!r}: expected whole numbers", file=sys.stderr)
        return 2
    try:
        spec = part(yaml.safe_load(SWEEP.read_text()), env.get("TASKS", "").split(), seeds,
                    env.get("VARIANTS", "").split(), bool(env.get("STEPS")))
    except ValueError as e:
        print(f"sweep_part: {e}", file=sys.stderr)
        return 2
    Path(out).write_text(yaml.safe_dump(spec, sort_keys=False))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: [TASKS=...] [SEEDS=...] [VARIANTS=...] [STEPS=N] python experiments/device/sweep_part.py OUT.yaml")
    sys.exit(main(sys.argv[1]))

"""experiments/device/plan_runs.py: a device call starts only the runs estimated to end within it,
estimated from finished runs, seed by seed."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def plan_runs():
    spec = importlib.util.spec_from_file_location("plan_runs", ROOT / "experiments/device/plan_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_estimates_come_from_whole_runs_resumed_runs_scaled_and_other_methods_extrapolated(plan_runs):
    done = {
        "lora_fa_q1-taskcb-seed42": {"wall_seconds": 100.0, "steps": 5000},
        "lora_fa_q1-taskrte-seed42": {"wall_seconds": 40.0, "steps": 5000, "resumed_after_step": 4000},
        "lora_fa_q1-taskcopa-seed42": {"wall_seconds": 50.0, "steps": 5000},
        "mezo-taskcopa-seed42": {"wall_seconds": 150.0, "steps": 5000},      # 3 x q1
        "mezo-taskcopa-seed1337": {"wall_seconds": 450.0, "steps": 5000},    # a shared GPU's: the shorter counts
        "mezo-taskrte-seed42": {"wall_seconds": 400.0, "steps": 5000},       # 2 x q1's scaled 200
    }
    seconds = plan_runs.run_seconds(done)
    assert seconds["lora_fa_q1", "rte"] == pytest.approx(200.0)  # 40 s for the last 1000 of 5000 steps
    assert seconds["mezo", "copa"] == 150.0
    start, margin = plan_runs.START_SECONDS, plan_runs.EXTRAPOLATION_MARGIN
    assert plan_runs.estimate("mezo-taskcopa-seed2025", seconds) == 150.0 + start
    # CB: q1's 100 s times MeZO's largest ratio to q1 (3, on COPA), with the margin
    assert plan_runs.estimate("mezo-taskcb-seed42", seconds) == pytest.approx(100.0 * 3 * margin + start)
    assert plan_runs.estimate("mezo-taskwic-seed42", seconds) is None  # nothing to go by
    assert plan_runs.estimate("fo_sgd_lora_fa-taskcb-seed42", seconds) is None
    with pytest.raises(ValueError, match="expected METHOD-taskTASK-seedSEED"):
        plan_runs.parts("mezo-cb-42")


def test_a_plan_fits_the_call_and_takes_the_first_seed_first(plan_runs):
    assert plan_runs.schedule_length([50, 30, 30, 10], gpus=2) == 60  # 50 | 30 + 30, then 10 after 50
    pending = ["a-taskx-seed1337", "a-tasky-seed42", "b-taskx-seed42", "b-tasky-seed1337", "b-taskz-seed42"]
    estimates = {"a-taskx-seed1337": 35.0, "a-tasky-seed42": 60.0, "b-taskx-seed42": 50.0,
                 "b-tasky-seed1337": 20.0}  # b-taskz has no estimate: never planned
    seconds = 80.0 / plan_runs.FILL
    chosen = plan_runs.plan(pending, estimates, seconds, gpus=2, seed_order=[42, 1337])
    # seed 42's two (60 | 50) first; then the 35 s run, first in the sweep's order, would push
    # b-taskx to 35 + 50 > 80; the 20 s one fits after b-taskx (50 + 20 <= 80)
    assert chosen == ["a-tasky-seed42", "b-taskx-seed42", "b-tasky-seed1337"]
    durations = [estimates[run] for run in chosen]
    assert plan_runs.schedule_length(durations, 2) <= plan_runs.FILL * seconds
    assert plan_runs.plan(pending, estimates, 10.0, gpus=2, seed_order=[42, 1337]) == []

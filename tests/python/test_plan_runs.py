"""experiments/device/plan_runs.py: a device call starts only the runs estimated to end within it,
estimated from finished runs, seed by seed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import load_script

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def plan_runs():
    return load_script("experiments/device/plan_runs.py")


def test_estimates_come_from_runs_alone_resumed_runs_filled_in_and_other_methods_extrapolated(
        plan_runs, monkeypatch):
    monkeypatch.setattr(plan_runs, "SHARED_GPU_RUNS",
                        frozenset({"mezo-taskcopa-seed1337", "fo_sgd_lora_fa-taskcb-seed42"}))
    monkeypatch.setattr(plan_runs, "SHARED_SLOWDOWN", 2.0)

    smollm2 = f"/tmp/prge-cache/models/{plan_runs.SHARED_GPU_MODEL}"

    def run(wall, step, steps=5000, resumed_after=None, model=smollm2):
        return {"wall_seconds": wall, "mean_step_seconds": step, "steps": steps, "resumed_after_step": resumed_after,
                "model": model}

    done = {
        "fo_sgd_lora_fa-taskcopa-seed42": run(40.0, 0.02, steps=1000),          # 20 s of steps, 20 s fixed
        "fo_sgd_lora_fa-taskrte-seed42": run(40.0, 0.03, steps=1000, resumed_after=800),  # 40 s after the resume
        "fo_sgd_lora_fa-taskcb-seed42": run(200.0, 0.1, steps=1000),            # shared: 100 s, 0.05 s a step
        "mezo-taskcopa-seed42": run(170.0, 0.03),                               # 1.5 x FO-SGD's step on COPA
        "mezo-taskcopa-seed1337": run(400.0, 0.07),                             # shared; a run alone is there
        "mezo-taskrte-seed42": run(140.0, 0.024, resumed_after=1000),           # 0.8 x FO-SGD's step
        "not-a-run": run(1.0, 0.001),
        "mezo-taskwic-seed42": {"steps": 5000},                                 # no times: nothing to go by
    }
    times = plan_runs.timings(done)
    assert times["fo_sgd_lora_fa", "rte"].wall == pytest.approx(40.0 + 800 * 0.03)
    assert times["fo_sgd_lora_fa", "cb"].step == pytest.approx(0.05) and times["fo_sgd_lora_fa", "cb"].wall == 100.0
    assert times["mezo", "copa"].wall == 170.0 and times["mezo", "copa"].fixed == pytest.approx(20.0)
    assert ("mezo", "wic") not in times
    start, margin = plan_runs.START_SECONDS, plan_runs.EXTRAPOLATION_MARGIN
    assert plan_runs.estimate("mezo-taskcopa-seed2025", 5000, times) == pytest.approx(20.0 + 5000 * 0.03 + start)
    # CB: MeZO has not run it; FO-SGD's CB (a shared run, halved) fixed part, then 5000 steps at
    # its step time times MeZO's largest step ratio to FO-SGD where both ran alone (1.5, COPA)
    want = 100.0 - 1000 * 0.05 + 5000 * 0.05 * 1.5 * margin + start
    assert plan_runs.estimate("mezo-taskcb-seed42", 5000, times) == pytest.approx(want)
    assert plan_runs.estimate("mezo-taskwnli-seed42", 5000, times) is None   # FO-SGD has no WNLI
    assert plan_runs.estimate("lora_fa_q1-taskcb-seed42", 5000, times) is None  # no q = 1 runs at all
    # another model's run of a shared run's name ran alone: its times are its own
    gemma = plan_runs.timings({"fo_sgd_lora_fa-taskcb-seed42": run(200.0, 0.1, steps=1000,
                                                                    model="/tmp/prge-cache/models/gemma3-270m")})
    assert gemma["fo_sgd_lora_fa", "cb"].step == 0.1 and not gemma["fo_sgd_lora_fa", "cb"].shared
    from prge.models import REGISTERED
    assert plan_runs.SHARED_GPU_MODEL in REGISTERED
    with pytest.raises(ValueError, match="expected METHOD-taskTASK-seedSEED"):
        plan_runs.parts("mezo-cb-42")


def test_bad_arguments_and_other_settings_are_named(plan_runs, tmp_path, capsys):
    sweep = ROOT / "configs/sweeps/paper_accuracy.yaml"
    assert plan_runs.main([str(sweep), str(tmp_path), "540", "--gpus", "0"]) == 2
    assert "plan_runs: error: --gpus 0" in capsys.readouterr().err
    run = tmp_path / "mezo-taskcb-seed42"
    run.mkdir()
    (run / "summary.json").write_text("{}")
    (run / "config.yaml").write_text("run:\n  steps: 3\n")
    assert plan_runs.main([str(sweep), str(tmp_path), "540", "--gpus", "2"]) == 2
    assert "holds a finished run of other settings" in capsys.readouterr().err
    assert plan_runs.main([str(sweep), str(tmp_path / "none"), "540", "--timings-from", str(tmp_path / "no.yaml")]) == 2
    assert f"plan_runs: error: sweep file not found: {tmp_path / 'no.yaml'}" in capsys.readouterr().err


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
    # a run stopped part-way (its checkpoint here) is taken before the first seed's runs
    assert plan_runs.plan(pending, estimates, seconds, gpus=2, seed_order=[42, 1337],
                          stopped={"a-taskx-seed1337"}) == ["a-taskx-seed1337", "a-tasky-seed42", "b-tasky-seed1337"]


def test_a_gpu_left_free_takes_a_run_whose_checkpoint_travels_after_the_chosen_ones(plan_runs):
    pending = ["a-taskx-seed42", "mezo-taskx-seed42", "a-taskz-seed1337", "a-tasky-seed42", "mezo-tasky-seed42",
               "a-taskw-seed42"]
    traveling = {run for run in pending if not run.startswith("mezo")}
    estimates = {"mezo-taskx-seed42": 50.0, "a-taskw-seed42": 1.0}
    margin = plan_runs.FILL_MARGIN

    def fill(chosen, seconds, gpus=1, stopped=frozenset()):
        return plan_runs.fill(pending, chosen, estimates, seconds, gpus, [42, 1337], traveling, stopped)

    # the first traveling run after the chosen one, seed 42 first (a-taskx comes before the chosen
    # run in the sweep's order and would start first, delaying it: not taken)
    assert fill(["mezo-taskx-seed42"], 50.0 + margin) == ["a-tasky-seed42"]
    assert fill(["mezo-taskx-seed42"], 50.0 + margin - 1) == []  # too little left for a checkpoint
    assert fill(["mezo-taskx-seed42"], 50.0 + margin - 1, gpus=2) == ["a-tasky-seed42"]  # the other GPU is free
    # a run stopped part-way (a checkpoint on the machine already) goes first, so they do not pile up
    assert fill(["mezo-taskx-seed42"], 200.0, stopped={"a-taskz-seed1337"}) == ["a-taskz-seed1337"]
    assert fill([], 100.0) == ["a-taskx-seed42"]
    assert fill(["a-taskw-seed42"], 100.0) == []  # nothing after the last chosen run
    assert plan_runs.fill(["mezo-tasky-seed42"], [], {}, 100.0, 1, [42], set()) == []


def test_a_run_stopped_part_way_is_estimated_for_the_steps_after_its_checkpoint(plan_runs, tmp_path):
    run = tmp_path / "mezo-taskmultirc-seed2025"
    assert plan_runs.remaining_steps(run, 5000) == 5000  # not started
    run.mkdir()
    for text, left in (('{"step": 3684, "directory": "checkpoint-3684"}', 1316), ("null", 5000), ("{", 5000),
                       ('{"step": 9000}', 5000), ('{"step": "3684"}', 5000)):
        (run / "checkpoint.json").write_text(text)
        assert plan_runs.remaining_steps(run, 5000) == left, text


def test_a_part_of_the_grid_is_estimated_from_the_full_sweeps_runs(plan_runs, tmp_path, capsys):
    """paper_accuracy.sh's VARIANTS=mezo sweeps a part of the grid; MeZO's first run of a task
    is scaled from FO-SGD's, which only the full sweep (--timings-from) holds."""
    import yaml
    from prge.sweep import expand_sweep
    spec = yaml.safe_load((ROOT / "configs/sweeps/paper_accuracy.yaml").read_text())
    spec["base"] = str(ROOT / "configs/paper/base.yaml")
    spec["grid"] = {"data.task": ["sst2", "rte"], "run.seed": [42]}
    spec["variants"] = [v for v in spec["variants"] if v["name"] in ("fo_sgd_lora_fa", "mezo")]
    for variant in spec["variants"]:
        variant["run.steps"] = 100
    full, part = tmp_path / "full.yaml", tmp_path / "part.yaml"
    full.write_text(yaml.safe_dump(spec, sort_keys=False))
    spec["variants"] = [v for v in spec["variants"] if v["name"] == "mezo"]
    part.write_text(yaml.safe_dump(spec, sort_keys=False))
    root = tmp_path / "runs"
    times = {"fo_sgd_lora_fa-tasksst2-seed42": (12.0, 0.1), "fo_sgd_lora_fa-taskrte-seed42": (22.0, 0.2),
             "mezo-tasksst2-seed42": (7.0, 0.05)}  # wall, step: MeZO's step 0.5 x FO-SGD's on SST-2
    for label, config in expand_sweep(str(full), [], output_root=str(root)):
        if label in times:
            (root / label).mkdir(parents=True)
            (root / label / "config.yaml").write_text(config.to_yaml())
            wall, step = times[label]
            (root / label / "summary.json").write_text(
                json.dumps({"wall_seconds": wall, "mean_step_seconds": step, "steps": 100}))
    capsys.readouterr()
    assert plan_runs.main([str(part), str(root), "1000"]) == 0
    out = capsys.readouterr()
    assert "no estimate (no finished run to go by): mezo-taskrte-seed42" in out.err
    # (only started to be stopped at the call's end: MeZO's updates checkpoint travels)
    assert out.out.split() == ["mezo-taskrte-seed42"] and "they stop with a checkpoint that travels" in out.err
    assert plan_runs.main([str(part), str(root), "1000", "--timings-from", str(full)]) == 0
    out = capsys.readouterr()
    assert out.out.split() == ["mezo-taskrte-seed42"]
    want = 2.0 + 100 * 0.2 * 0.5 * plan_runs.EXTRAPOLATION_MARGIN + plan_runs.START_SECONDS
    assert f"estimated {want:.0f} s of 1000" in out.err


def test_another_models_runs_are_scaled_by_this_models_ratio_for_the_same_method(plan_runs, tmp_path, capsys):
    """A Gemma sweep's first runs: a run nothing under its root goes by is estimated from
    SmolLM2's run of the same method and task (--scale-from), times the largest Gemma / SmolLM2
    wall-time ratio of that method; a method Gemma has not finished once is not planned."""
    import yaml
    from prge.sweep import expand_sweep
    spec = yaml.safe_load((ROOT / "configs/sweeps/paper_accuracy.yaml").read_text())
    spec["base"] = str(ROOT / "configs/paper/base.yaml")
    spec["grid"] = {"data.task": ["sst2", "rte", "wsc"], "run.seed": [42]}
    spec["variants"] = [v for v in spec["variants"] if v["name"] in ("prge_q4_dual", "mezo")]
    for variant in spec["variants"]:
        variant["run.steps"] = 100
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump(spec, sort_keys=False))

    def summary(wall, step):
        return json.dumps({"wall_seconds": wall, "mean_step_seconds": step, "steps": 100})

    other = tmp_path / "smollm2"  # run folders as keep_runs.py keeps them
    for label, (wall, step) in {"prge_q4_dual-tasksst2-seed42": (20.0, 0.1), "prge_q4_dual-taskrte-seed42": (30.0, 0.2),
                                "prge_q4_dual-taskwsc-seed42": (50.0, 0.3), "mezo-taskrte-seed42": (40.0, 0.3)}.items():
        (other / label).mkdir(parents=True)
        (other / label / "summary.json").write_text(summary(wall, step))
    root = tmp_path / "gemma"
    for label, config in expand_sweep(str(sweep), [], output_root=str(root)):
        if label in ("prge_q4_dual-tasksst2-seed42", "prge_q4_dual-taskwsc-seed42"):
            (root / label).mkdir(parents=True)
            (root / label / "config.yaml").write_text(config.to_yaml())
            wall = {"prge_q4_dual-tasksst2-seed42": 30.0, "prge_q4_dual-taskwsc-seed42": 60.0}[label]
            (root / label / "summary.json").write_text(summary(wall, 0.2))
    capsys.readouterr()
    assert plan_runs.main([str(sweep), str(root), "1000", "--scale-from", str(other)]) == 0
    out = capsys.readouterr()
    assert out.out.split() == ["prge_q4_dual-taskrte-seed42"]  # MeZO: no Gemma run to take a ratio from
    want = (10.0 + 100 * 0.2) * 1.5 * plan_runs.EXTRAPOLATION_MARGIN + plan_runs.START_SECONDS  # ratio max(1.5, 1.2)
    assert f"estimated {want:.0f} s of 1000" in out.err
    assert "no estimate (no finished run to go by): mezo-tasksst2-seed42, mezo-taskrte-seed42" in out.err
    assert plan_runs.main([str(sweep), str(root), "1000", "--scale-from", str(tmp_path / "none")]) == 2
    assert "plan_runs: error: --scale-from" in capsys.readouterr().err


def test_a_call_with_nothing_to_go_by_still_starts_a_run_whose_checkpoint_travels(plan_runs, tmp_path, capsys):
    sweep = ROOT / "configs/sweeps/paper_accuracy.yaml"
    assert plan_runs.main([str(sweep), str(tmp_path / "runs"), "540", "--gpus", "2"]) == 0
    out = capsys.readouterr()
    assert out.out.split() == ["fo_sgd_lora_fa-tasksst2-seed42"]  # one: stopped_runs.py sends back ~one checkpoint
    assert "then, until the call's end (they stop with a checkpoint that travels): fo_sgd_lora_fa-tasksst2" in out.err
    mezo_only = tmp_path / "mezo.yaml"  # MeZO's updates travel; its full-parameter weights do not
    import yaml
    spec = yaml.safe_load(sweep.read_text())
    spec["base"] = str(ROOT / "configs/paper/base.yaml")
    spec["variants"] = [v for v in spec["variants"] if v["name"] == "mezo"]
    mezo_only.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert plan_runs.main([str(mezo_only), str(tmp_path / "runs"), "540"]) == 0
    assert capsys.readouterr().out.split() == ["mezo-tasksst2-seed42"]
    stopped = tmp_path / "runs" / "mezo-tasksst2-seed42"  # stopped with weights before the sweep said updates
    (stopped / "checkpoint-10").mkdir(parents=True)
    (stopped / "checkpoint-10" / "checkpoint.safetensors").write_bytes(b"")
    (stopped / "checkpoint.json").write_text('{"step": 10, "directory": "checkpoint-10"}')
    assert plan_runs.main([str(mezo_only), str(tmp_path / "runs"), "540"]) == 0
    assert capsys.readouterr().out.split() == ["mezo-taskrte-seed42"]  # its weights stay: the next one travels
    assert plan_runs.main([str(mezo_only), str(tmp_path / "runs"), "540", "--set", "run.checkpoint_format=weights"]) == 0
    assert capsys.readouterr().out.split() == []
    assert plan_runs.main([str(sweep), str(tmp_path / "runs"), str(plan_runs.FILL_MARGIN - 1)]) == 0
    assert capsys.readouterr().out.split() == []  # a call too short to reach a checkpoint starts nothing

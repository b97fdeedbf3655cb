"""experiments/device/sweep_part.py: the part of the paper sweep paper_accuracy.sh runs for TASKS,
SEEDS, VARIANTS and STEPS expands to exactly the runs keep_runs.py expects of it, and a mistake
in those settings stops it by name, writing nothing."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import load_script

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "experiments/device/sweep_part.py"


def write_part(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / "part.yaml"
    clean = {k: v for k, v in os.environ.items() if k not in ("TASKS", "SEEDS", "VARIANTS", "STEPS")}
    result = subprocess.run([sys.executable, str(SCRIPT), str(out)], env={**clean, **env},
                            capture_output=True, text=True, cwd=ROOT)
    return result, out


def run_names(path: Path, overrides: list[tuple[str, str]] | None = None) -> list[str]:
    from prge.sweep import expand_sweep

    # Expanded beside the full sweep, as the device does (the part's base path is relative to it).
    beside = ROOT / "configs/sweeps" / f".test_part_{os.getpid()}.yaml"
    beside.write_text(path.read_text())
    try:
        return [Path(c.run.output_dir).name for _, c in expand_sweep(beside, overrides or [], "/tmp/runs")]
    finally:
        beside.unlink()


def test_a_part_at_another_step_count_is_what_keep_runs_expects(tmp_path):
    result, out = write_part(tmp_path, TASKS="sst2 rte", STEPS="20000")
    assert result.returncode == 0, result.stderr
    names = run_names(out, [("run.steps", "20000")])
    assert len(names) == 24 and not any(n.startswith("fo_sgd") for n in names)  # 4 methods x 2 tasks x 3 seeds
    keep = load_script("experiments/device/keep_runs.py")
    expected = keep.expected_runs(keep.target(keep.DEVICE_PATHS["DEFAULT_MODEL"], tmp_path, 20000))
    assert set(names) <= set(expected) and len(expected) == 4 * 11 * 3
    assert not any(n.startswith("fo_sgd") for n in expected)


def test_the_whole_grid_at_another_step_count_is_exactly_what_keep_runs_expects(tmp_path):
    # The two read FO-SGD's estimator kind from different places (the variant's key, the expanded
    # config): on the sweep as committed they must agree run for run.
    result, out = write_part(tmp_path, STEPS="20000")
    assert result.returncode == 0, result.stderr
    keep = load_script("experiments/device/keep_runs.py")
    expected = keep.expected_runs(keep.target(keep.DEVICE_PATHS["DEFAULT_MODEL"], tmp_path, 20000))
    assert sorted(run_names(out, [("run.steps", "20000")])) == sorted(expected)


def test_a_part_of_the_grid_keeps_the_order_given_and_the_run_names(tmp_path):
    result, out = write_part(tmp_path, TASKS="rte sst2", SEEDS="42", VARIANTS="prge_q4_dual mezo")
    assert result.returncode == 0, result.stderr
    spec = yaml.safe_load(out.read_text())
    assert spec["grid"]["data.task"] == ["rte", "sst2"] and spec["grid"]["run.seed"] == [42]
    assert [v["name"] for v in spec["variants"]] == ["prge_q4_dual", "mezo"]
    full = set(run_names(ROOT / "configs/sweeps/paper_accuracy.yaml"))
    assert set(run_names(out)) <= full and len(run_names(out)) == 4


def test_mistakes_stop_it_by_name_and_write_nothing(tmp_path):
    for env, message in [({"VARIANTS": "mezzo"}, "VARIANTS: unknown ['mezzo']"),
                         ({"VARIANTS": "fo_sgd_lora_fa mezo", "STEPS": "20000"},
                          "VARIANTS: ['fo_sgd_lora_fa'] with STEPS"),
                         ({"TASKS": "sst2 boolq"}, "TASKS: ['boolq'] not in the sweep's data.task"),
                         ({"SEEDS": "7"}, "SEEDS: [7] not in the sweep's run.seed"),
                         ({"SEEDS": "4x"}, "SEEDS='4x': expected whole numbers"),
                         ({"TASKS": "sst2 rte sst2"}, "TASKS: ['sst2'] given more than once"),
                         ({"SEEDS": "42 42"}, "SEEDS: [42] given more than once"),
                         ({"VARIANTS": "mezo mezo"}, "VARIANTS: ['mezo'] given more than once")]:
        result, out = write_part(tmp_path, **env)
        assert result.returncode == 2 and f"sweep_part: {message}" in result.stderr, (env, result.stderr)
        assert not out.exists()


def test_only_first_order_methods_keep_the_protocol_steps():
    part = load_script("experiments/device/sweep_part.py")
    assert part.keeps_protocol_steps("first_order")
    assert not any(part.keeps_protocol_steps(k) for k in ("mezo", "prge", ""))

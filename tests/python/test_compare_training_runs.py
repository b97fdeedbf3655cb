"""experiments/compare_training_runs.py: windowed training loss and evaluations of runs side by side."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import load_script

@pytest.fixture(scope="module")
def compare():
    return load_script("experiments/compare_training_runs.py")


def write_run(folder: Path, records: list[dict]) -> Path:
    folder.mkdir()
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def test_losses_are_averaged_over_windows_ending_at_multiples_and_missing_values_show(compare, tmp_path, capsys):
    a = write_run(tmp_path / "a", [{"step": 0, "eval_accuracy": 0.5}, {"step": 1, "loss": 4.0},
                                   {"step": 2, "loss": 2.0},
                                   {"step": 3, "loss": 1.0}, {"step": 2, "eval_accuracy": 0.75}])
    b = write_run(tmp_path / "b", [{"step": 2, "loss": 3.0}])
    assert compare.main([f"bf16={a}", f"fp32={b}", "--window", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "| 2 | 3.000 | 3.000 |" in out      # (4 + 2) / 2 and b's one loss
    assert "| 4 | 1.000 | - |" in out          # step 3 falls in (2, 4]
    assert "| 0 | 0.500 | - |" in out and "| 2 | 0.750 | - |" in out


def test_bad_input_is_named(compare, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n{oops\n')
    assert compare.main([f"x={bad}"]) == 2
    assert f"{bad / 'metrics.jsonl'}:2: not JSON" in capsys.readouterr().err
    assert compare.main(["nofolder"]) == 2
    assert "expected NAME=RUN_DIR" in capsys.readouterr().err
    assert compare.main([f"x={tmp_path / 'none'}"]) == 2
    assert "compare_training_runs: error:" in capsys.readouterr().err
    assert compare.main([f"x={bad}", "--window", "0"]) == 2
    for line, message in [('{"step": 1, "loss": "high"}', "loss 'high' is not a finite number"),
                          ('{"step": 1, "loss": null}', "loss None is not a finite number"),
                          ('{"step": 1, "eval_accuracy": NaN}', "eval_accuracy nan is not a finite number"),
                          ('{"eval_accuracy": 0.5}', "expected an object with an integer step"),
                          ('{"step": "3", "loss": 1.0}', "expected an object with an integer step"),
                          ('"loss"', "expected an object with an integer step")]:
        (bad / "metrics.jsonl").write_text('{"step": 0, "eval_accuracy": 0.5}\n' + line + "\n")
        assert compare.main([f"x={bad}"]) == 2
        assert f"metrics.jsonl:2: {message}" in capsys.readouterr().err, line
    (bad / "metrics.jsonl").write_bytes(b"\xff\xfe")
    assert compare.main([f"x={bad}"]) == 2
    assert f"{bad / 'metrics.jsonl'}: not UTF-8 text" in capsys.readouterr().err
    (bad / "metrics.jsonl").write_text("")
    assert compare.main([f"x={bad}"]) == 2
    assert f"{bad / 'metrics.jsonl'}: no records" in capsys.readouterr().err
    (bad / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    assert compare.main([f"x={bad}", f"x={bad}"]) == 2
    assert "'x' named twice" in capsys.readouterr().err

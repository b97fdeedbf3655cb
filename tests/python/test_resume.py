"""A run killed mid-way (SIGKILL, no chance to clean up) and resumed with --resume writes
the same metrics.jsonl (wall-clock fields aside) and the same final weights, bit for bit, as
an uninterrupted run; Ctrl-C stops after a whole step with a checkpoint."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import make_tiny_assets, write_config
from prge.cli import main

STEPS, KILL_AT = 8, 6  # checkpoints at 2 and 4 (and 6, never written: killed inside step 6)

# Runs `prge train` in a child whose 6th training step kills the process mid-run.
KILLER = """
import os, signal, sys
import prge._core as core
step, calls = core.Trainer.step, []
def killing_step(self, batch):
    calls.append(1)
    if len(calls) == {kill_at}:
        os.kill(os.getpid(), signal.{sig})
    return step(self, batch)
core.Trainer.step = killing_step
from prge.cli import main
sys.exit(main(sys.argv[1:]))
"""


def records(run: Path) -> list[dict]:
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        record.pop("seconds", None)
        out.append(record)
    return out


def child(args, sig="SIGKILL", kill_at=KILL_AT):
    code = KILLER.format(kill_at=kill_at, sig=sig)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent)] + sys.path)}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture
def configs(tmp_path):
    model_dir, data_dir = make_tiny_assets(tmp_path)

    def config(name):
        return write_config(tmp_path, model_dir, data_dir, optimizer={"lr": 5e-2, "momentum": 0.9},
                            run={"steps": STEPS, "eval_every": 3, "log_every": 1, "checkpoint_every": 2,
                                 "output_dir": str(tmp_path / name)})
    return tmp_path, config


def test_killed_run_resumes_bit_identically(configs):
    tmp_path, config = configs
    reference = config("reference")
    reference = reference.rename(tmp_path / "reference.yaml")
    assert main(["train", str(reference), "--no-progress"]) == 0
    killed = config("killed")
    done = child(["train", str(killed), "--no-progress"])
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert not (tmp_path / "killed" / "summary.json").exists()
    assert json.loads((tmp_path / "killed" / "checkpoint.json").read_text())["step"] == 4
    assert main(["train", str(killed), "--no-progress"]) == 2  # not over it without --resume
    assert main(["train", str(killed), "--no-progress", "--resume"]) == 0
    assert records(tmp_path / "killed") == records(tmp_path / "reference")
    ours, theirs = (load_file(str(tmp_path / d / "trained.safetensors")) for d in ("killed", "reference"))
    assert ours.keys() == theirs.keys() and all((ours[k] == theirs[k]).all() for k in ours)
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert summary["accuracy_after"] == json.loads((tmp_path / "reference" / "summary.json").read_text())["accuracy_after"]


def test_ctrl_c_checkpoints_and_exits_cleanly(configs, capsys):
    tmp_path, config = configs
    path = config("interrupted")
    done = child(["train", str(path), "--no-progress"], sig="SIGINT", kill_at=3)
    assert done.returncode == 2 and "prge: error: interrupted after step 3: checkpoint saved" in done.stderr, done.stderr
    assert json.loads((tmp_path / "interrupted" / "checkpoint.json").read_text())["step"] == 3
    assert main(["train", str(path), "--no-progress", "--resume"]) == 0
    assert main(["train", str(path), "--no-progress", "--resume"]) == 2
    assert "the run finished; nothing to resume" in capsys.readouterr().err

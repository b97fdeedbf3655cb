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

from conftest import make_tiny_assets, write_config, write_state
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
    uninterrupted = json.loads((tmp_path / "reference" / "summary.json").read_text())
    assert summary["accuracy_after"] == uninterrupted["accuracy_after"]
    # the wall time is the finishing process's own, and the summary says where it took over
    assert summary["resumed_after_step"] == 4 and uninterrupted["resumed_after_step"] == 0
    assert 0 < summary["wall_seconds"] and 0 < uninterrupted["wall_seconds"]


def test_ctrl_c_checkpoints_and_exits_cleanly(configs, capsys):
    tmp_path, config = configs
    path = config("interrupted")
    done = child(["train", str(path), "--no-progress"], sig="SIGINT", kill_at=3)
    assert done.returncode == 2 and "prge: error: interrupted after step 3: checkpoint saved" in done.stderr, done.stderr
    assert json.loads((tmp_path / "interrupted" / "checkpoint.json").read_text())["step"] == 3
    assert main(["train", str(path), "--no-progress", "--resume"]) == 0
    assert main(["train", str(path), "--no-progress", "--resume"]) == 2
    assert "the run finished; nothing to resume" in capsys.readouterr().err


# `prge train` as its console script runs it (prge.cli.entry), stopped by Ctrl-C in step 3; then
# two more Ctrl-C and a SIGTERM while it exits: after its command returned, and in the
# interpreter's shutdown.
SIGNALS_WHILE_EXITING = """
import atexit, os, signal, sys, time
import prge._core as core
import prge.cli as cli
step, calls = core.Trainer.step, []
def stopping_step(self, batch):
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGINT)
    return step(self, batch)
core.Trainer.step = stopping_step
def more_signals():
    for sig in (signal.SIGINT, signal.SIGINT, signal.SIGTERM):
        os.kill(os.getpid(), sig)
        time.sleep(0.3)  # each past the repeat window: a new stop, not the first delivered twice
command = cli._command
def command_then_signals(argv):
    code = command(argv)
    more_signals()
    return code
cli._command = command_then_signals
atexit.register(more_signals)
cli.{entry}()
"""


@pytest.mark.parametrize("entry", ["entry", "main"])
def test_ctrl_c_while_a_stopped_run_exits_changes_nothing(configs, entry):
    """The command's process ignores stop signals once its run has stopped (or its command has
    returned); prge.cli.main, for Python sessions, leaves their handlers alone."""
    tmp_path, config = configs
    path = config("interrupted")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent)] + sys.path)}
    done = subprocess.run([sys.executable, "-c", SIGNALS_WHILE_EXITING.format(entry=entry), "train", str(path),
                           "--no-progress"], capture_output=True, text=True, env=env, timeout=600)
    assert json.loads((tmp_path / "interrupted" / "checkpoint.json").read_text())["step"] == 3
    if entry == "main":  # sys.exit(main()) is never reached: the next Ctrl-C ends the process
        assert done.returncode != 2 and "KeyboardInterrupt" in done.stderr, done.stderr[-3000:]
        return
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr, done.stderr[-3000:]
    assert [line for line in done.stderr.splitlines() if line.startswith("prge: error: ")] == [
        "prge: error: interrupted after step 3: checkpoint saved in " + str(tmp_path / "interrupted")
        + "; continue with `prge train CONFIG --resume`"], done.stderr[-3000:]


def test_the_console_script_is_the_process_entry():
    """`prge` (the installed console script) runs prge.cli.entry, which ignores the signals after a
    stop; prge.cli.main would not."""
    from importlib.metadata import entry_points

    assert [e.value for e in entry_points(group="console_scripts", name="prge")] == ["prge.cli:entry"]


def interrupted_at_step_3(configs, name):
    """A run of the `configs` fixture stopped by SIGINT after step 3: (its config path, the path
    of its checkpoint's state.json)."""
    from prge import checkpoints

    tmp_path, config = configs
    path = config(name)
    done = child(["train", str(path), "--no-progress"], sig="SIGINT", kill_at=3)
    assert done.returncode == 2, done.stderr
    pointer = json.loads((tmp_path / name / checkpoints.POINTER).read_text())
    return path, tmp_path / name / pointer["directory"] / checkpoints.STATE


def test_a_resume_under_another_generator_says_so(configs, capsys):
    """A checkpoint records the generator its steps drew z from; resuming where estimator.rng
    resolves to another one (rng: auto for MeZO on CUDA changed from torch to counter) goes on
    with a note naming both and how to keep the stream."""
    path, state_path = interrupted_at_step_3(configs, "other_rng")
    state = json.loads(state_path.read_text())
    assert state["rng"] == "torch"  # this CPU run's generator
    write_state(state_path, {**state, "rng": "counter"})  # as a run on CUDA would have written it
    capsys.readouterr()
    assert main(["train", str(path), "--no-progress", "--resume"]) == 0
    out = capsys.readouterr().out
    assert ("[prge] note: steps 1-3 drew z from the counter generator (estimator.rng: auto then), the steps from "
            "here on draw from torch") in out and "start the run again with estimator.rng: counter" in out, out


def test_a_checkpoint_naming_no_generator_prge_draws_from_is_refused(configs, capsys):
    """A state.json whose rng is not torch or counter (edited or damaged) is refused by name,
    not echoed into a note."""
    path, state_path = interrupted_at_step_3(configs, "bad_rng")
    state_path.write_text(json.dumps({**json.loads(state_path.read_text()), "rng": "banana"}))
    capsys.readouterr()
    assert main(["train", str(path), "--no-progress", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'prge: error: {state_path}: the checkpoint is damaged or was edited: rng: "banana" is not '
                          'a generator'), err


def test_a_state_edited_to_other_valid_values_is_refused_by_its_sha256(configs, capsys):
    """Another order of the same examples, or other counts, read as a state prge could write;
    state.json's sha256 of its fields tells them from what was written. A state of an earlier
    version, written without one, is taken as it is."""
    path, state_path = interrupted_at_step_3(configs, "edited")
    state = json.loads(state_path.read_text())
    for edited in ({**state, "sampler": {**state["sampler"], "order": state["sampler"]["order"][::-1]}},
                   {**state, "forward_passes": state["forward_passes"] + 1000}):
        state_path.write_text(json.dumps(edited))
        capsys.readouterr()
        assert main(["train", str(path), "--no-progress", "--resume"]) == 2
        assert capsys.readouterr().err.startswith(
            f"prge: error: {state_path}: the checkpoint is damaged or was edited: its fields do not match the sha256")
    state_path.write_text(json.dumps({k: v for k, v in state.items() if k != "sha256"}))
    assert main(["train", str(path), "--no-progress", "--resume"]) == 0


@pytest.mark.parametrize("field,value,message", [
    ("forward_passes", "12", "forward_passes is \"12\", not a count"),
    ("sequences", -4, "sequences is -4, not a count"),
    ("step_seconds", [0.1, None, 0.1], "step_seconds is not a list of at most 3 steps' times"),
    ("step_seconds", [0.1] * 4, "step_seconds is not a list of at most 3 steps' times"),
    ("step_seconds", [1e308] * 3, "with a finite sum"),
    ("forward_passes", 10 ** 40, "forward_passes is 10000000000000000000000000000000000000000, not a count"),
    ("data", ["train"], "data is not the data's fingerprint"),
    ("data", {}, "data is not the data's fingerprint"),
    ("data", "pop", "data is missing the data's fingerprint"),
    ("sampler", "pop", "it has no sampler"),
    ("sampler", None, "sampler: not the sampler state prge writes"),
    ("sampler", {"rng": [3, [1] * 3, None], "order": []}, "sampler: rng is not a generator state"),
    ("sampler", "order:duplicate", "sampler: order is not a list of distinct example indices below"),
    ("sampler", "order:outside", "sampler: order names example 1000000, and there are 40 training examples"),
    ("sampler", "gauss", "sampler: rng is not a generator state (its gauss value"),
    ("sampler", "version", "sampler: rng is not a generator state (its version \"3\" is not an integer)"),
])
def test_a_damaged_checkpoint_state_is_named_not_a_traceback(configs, capsys, field, value, message):
    """Every field a resume takes over from state.json is checked: a damaged or edited one is
    named with its file, never a traceback or a run that goes on from nonsense."""
    path, state_path = interrupted_at_step_3(configs, "damaged_" + field)
    state = json.loads(state_path.read_text())
    sampler = state["sampler"]
    if value == "order:duplicate":
        value = {**sampler, "order": [0, 0] + sampler["order"][2:]}
    elif value == "order:outside":
        value = {**sampler, "order": [10 ** 6] + sampler["order"][1:]}
    elif value == "gauss":
        value = {**sampler, "rng": sampler["rng"][:2] + ["x"]}
    elif value == "version":
        value = {**sampler, "rng": ["3"] + sampler["rng"][1:]}
    if value == "pop":
        state.pop(field)
    else:
        state[field] = value
    state_path.write_text(json.dumps(state))
    capsys.readouterr()
    assert main(["train", str(path), "--no-progress", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"prge: error: {state_path}: ") and message in err and "damaged or was edited" in err, err
    assert "Traceback" not in err


def test_a_run_on_a_model_saved_over_since_is_refused_by_resume_export_and_generate(configs, capsys):
    """The model directory's weights regenerated after the run started (same config, other
    weights): --resume, `prge adapters export` and `prge generate` on the run refuse it, naming
    the file that stored the model's fingerprint, instead of pairing the trained adapters with
    another base. A checkpoint written before fingerprints were stored resumes as before; an
    unfinished run is named as such by `prge generate`."""
    import shutil

    import torch
    import yaml
    from safetensors.torch import save_file

    path, state_path = interrupted_at_step_3(configs, "other_model")
    run = state_path.parent.parent
    model_dir = Path(yaml.safe_load(path.read_text())["model"]["name"])
    weights = model_dir / "model.safetensors"
    shutil.copy(weights, configs[0] / "original.safetensors")

    def regenerate():
        save_file({k: torch.randn_like(v) for k, v in load_file(weights).items()}, weights)

    capsys.readouterr()
    assert main(["generate", str(run), "--prompt", "good"]) == 2
    assert (f"prge: error: {run}: the run there has not finished (no trained.safetensors): it has a checkpoint; finish "
            f"it with `prge train {run / 'config.yaml'} --resume`") in capsys.readouterr().err
    regenerate()
    assert main(["train", str(path), "--no-progress", "--resume"]) == 2
    assert f"prge: error: {state_path}: the run trained on another model than {model_dir} holds now (its config.json " \
           "or weights differ" in capsys.readouterr().err
    state = json.loads(state_path.read_text())
    write_state(state_path, {k: v for k, v in state.items() if k != "model"})  # as an earlier version wrote it
    assert main(["train", str(path), "--no-progress", "--resume"]) == 0
    shutil.copy(configs[0] / "original.safetensors", weights)
    assert main(["train", str(path), "--no-progress", "--overwrite"]) == 0
    capsys.readouterr()
    regenerate()
    for argv in (["adapters", "export", str(run), "--out", str(configs[0] / "peft")],
                 ["generate", str(run), "--prompt", "good"]):
        assert main(argv) == 2
        assert f"prge: error: {run / 'summary.json'}: the run trained on another model than {model_dir} holds " \
               "now" in capsys.readouterr().err
    shutil.copy(configs[0] / "original.safetensors", weights)
    assert main(["generate", str(run), "--prompt", "good", "--max-new-tokens", "2"]) == 0


def test_a_resume_on_a_shrunk_training_set_skips_the_examples_gone(configs, capsys):
    """--resume-changed-data after training examples were removed: the saved epoch order's
    examples past the new end are skipped, with a warning; without the flag the changed data is
    refused (the checkpoint is not blamed)."""
    path, state_path = interrupted_at_step_3(configs, "shrunk")
    state = json.loads(state_path.read_text())
    state["sampler"]["order"] = state["sampler"]["order"] + [39] if 39 not in state["sampler"]["order"] else \
        state["sampler"]["order"]
    state_path.write_text(json.dumps(state))
    train = configs[0] / "food" / "train.csv"
    train.write_text("".join(train.read_text().splitlines(keepends=True)[:31]))  # header and 30 of 40 examples
    capsys.readouterr()
    assert main(["train", str(path), "--no-progress", "--resume"]) == 2
    assert "the train data differ from the checkpoint's" in capsys.readouterr().err
    assert main(["train", str(path), "--no-progress", "--resume", "--resume-changed-data"]) == 0
    out = capsys.readouterr()
    skipped = sum(i >= 30 for i in state["sampler"]["order"])
    assert (f"the training data has 30 examples now; the {skipped} of this epoch's order past them are skipped"
            in out.out + out.err)


def test_a_checkpoint_from_before_generators_were_recorded():
    """A checkpoint without "rng" (written before checkpoints recorded it) of a MeZO run on CUDA
    under rng: auto drew from the torch generator, auto's meaning then; other runs get no note."""
    from types import SimpleNamespace as NS

    from prge.checkpoints import generator_note

    def config(kind, device, rng="auto"):
        return NS(estimator=NS(kind=kind, rng=rng), model=NS(device=device))

    counter, torch_rng = NS(rng="counter"), NS(rng="torch")
    note = generator_note({"step": 7}, counter, config("mezo", "cuda"))
    assert note and "steps 1-7 drew z from the torch generator" in note and "draw from counter" in note
    assert generator_note({"step": 7}, counter, config("mezo", "cuda", "counter")) is None
    assert generator_note({"step": 7}, torch_rng, config("mezo", "cpu")) is None
    assert generator_note({"step": 7}, counter, config("prge", "cuda")) is None
    assert generator_note({"step": 7, "rng": "counter"}, counter, config("mezo", "cuda")) is None


# Issue 24: a checkpoint is one atomic unit. A child process stops itself at a write boundary
# (prge.durable.boundary: PRGE_TEST_SIGNAL_AT_WRITE=WHERE[@SIGNAL]); after every stop, --resume
# ends with the metrics and final weights of the uninterrupted run, bit for bit.
from prge import durable  # noqa: E402

SHORT = {"steps": 4, "eval_every": 2, "log_every": 1, "checkpoint_every": 2}
# Every write of a 4-step run with checkpoints at 2 and 4, in order: a stop at each number is a
# stop before, between and after each file (a stop inside a file's write leaves only its .tmp).
BOUNDARIES = ["config.yaml written", "metrics.jsonl started"] + [
    f"checkpoint-{s}: {what}" for s in (2, 4)
    for what in ("begin", "checkpoint.safetensors written", "state.json written", "directory in place", "current",
                 "previous removed")] + ["trained.safetensors: begin", "trained.safetensors written",
                                         "summary.json written"]

CHILD = """
import os, signal, sys
{patch}
from prge.cli import main
sys.exit(main(sys.argv[1:]))
"""

# Ctrl-C (once or twice) while the evaluation before training runs.
CTRL_C_IN_FIRST_EVALUATION = """
import prge.train as train
real, calls = train.evaluate_examples, []
def settle():
    pass
def evaluate(*args, **kwargs):
    calls.append(1)
    if len(calls) == 1:
        for _ in range({presses}):
            os.kill(os.getpid(), signal.SIGINT)
            settle()
    return real(*args, **kwargs)
train.evaluate_examples = evaluate
"""


def run_child(argv, hook=None, patch="", extra_env=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent)] + sys.path), **(extra_env or {})}
    env.pop(durable.SIGNAL_AT_WRITE, None)
    if hook:
        env[durable.SIGNAL_AT_WRITE] = hook
    return subprocess.run([sys.executable, "-c", CHILD.format(patch=patch), *argv], capture_output=True, text=True,
                          env=env, timeout=600)


def trained_tensors(run: Path) -> dict:
    return load_file(str(run / "trained.safetensors"))


def assert_same_run(run: Path, reference: Path) -> None:
    assert records(run) == records(reference)
    ours, theirs = trained_tensors(run), trained_tensors(reference)
    assert ours.keys() == theirs.keys() and all(torch_equal(ours[k], theirs[k]) for k in ours)
    got, want = (json.loads((d / "summary.json").read_text()) for d in (run, reference))
    assert got["accuracy_after"] == want["accuracy_after"] and got["eval_history"] == want["eval_history"]
    assert got["data_fingerprint"] == want["data_fingerprint"]


def torch_equal(a, b) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and bool((a == b).all())


@pytest.fixture
def short_configs(tmp_path):
    model_dir, data_dir = make_tiny_assets(tmp_path)

    def config(name, **run):
        path = write_config(tmp_path, model_dir, data_dir, optimizer={"lr": 5e-2, "momentum": 0.9},
                            run={**SHORT, **run, "output_dir": str(tmp_path / name)})
        return path.rename(tmp_path / f"{name}.yaml")
    reference = config("reference")
    durable._boundaries.clear()
    assert main(["train", str(reference), "--no-progress"]) == 0
    assert durable._boundaries == BOUNDARIES  # the writes the tests below stop between
    return tmp_path, config, tmp_path / "reference"


def test_a_kill_at_every_write_boundary_resumes_to_the_uninterrupted_result(short_configs):
    tmp_path, config, reference = short_configs
    for number, name in enumerate(BOUNDARIES, 1):
        path = config(f"killed-{number}")
        run = tmp_path / f"killed-{number}"
        done = run_child(["train", str(path), "--no-progress"], hook=str(number))
        assert done.returncode == -signal.SIGKILL, (name, done.stderr[-2000:])
        assert not list(run.glob("*.tmp")) or name != "summary.json written"
        if name == "summary.json written":  # the run had finished: nothing to resume, nothing lost
            assert main(["train", str(path), "--no-progress", "--resume"]) == 2
        else:
            assert main(["train", str(path), "--no-progress", "--resume"]) == 0, name
        assert_same_run(run, reference)
        # One checkpoint is left, the current one, and no staging directory.
        assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-4"], (name, list(run.iterdir()))
    # Past the last boundary nothing stops the child: it finishes.
    path = config("past-the-end")
    assert run_child(["train", str(path), "--no-progress"], hook=str(len(BOUNDARIES) + 1)).returncode == 0


# (how the child is stopped, what its one error line says)
CTRL_C_CASES = [
    ({"patch": CTRL_C_IN_FIRST_EVALUATION.format(presses=1)}, "interrupted before step 1: continue with"),
    ({"patch": CTRL_C_IN_FIRST_EVALUATION.format(presses=2)}, "interrupted before step 1: continue with"),
    ({"hook": "metrics.jsonl started@SIGINT"}, "interrupted before step 1: continue with"),
    # One Ctrl-C while step 2's checkpoint is written: the run stops after the next step, saved.
    ({"hook": "checkpoint-2: checkpoint.safetensors written@SIGINT"}, "interrupted after step 3: checkpoint saved"),
    ({"hook": "checkpoint-2: begin@SIGTERM"}, "interrupted after step 3: checkpoint saved"),
    # A second Ctrl-C during that write: held until the checkpoint is whole, then the run stops.
    ({"hook": "checkpoint-2: checkpoint.safetensors written@SIGINT2"}, "interrupted after step 2: checkpoint saved"),
    ({"hook": "checkpoint-4: directory in place@SIGINT2"}, "interrupted after step 4: checkpoint saved"),
    # Ctrl-C while the final weights are written: they are finished, the run is resumable at its end.
    ({"hook": "trained.safetensors: begin@SIGINT"}, "interrupted after step 4: checkpoint saved"),
    ({"hook": "trained.safetensors: begin@SIGINT2"}, "interrupted after step 4: checkpoint saved"),
]


@pytest.mark.parametrize("stop, message", CTRL_C_CASES, ids=[str(i) for i in range(len(CTRL_C_CASES))])
def test_ctrl_c_at_any_moment_ends_in_one_line_and_resumes_to_the_same_result(short_configs, stop, message):
    tmp_path, config, reference = short_configs
    path = config("interrupted")
    done = run_child(["train", str(path), "--no-progress"], **stop)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("prge: error: ")]
    assert len(errors) == 1 and message in errors[0], done.stderr[-3000:]
    assert "prge train CONFIG --resume" in errors[0]
    assert not (tmp_path / "interrupted" / "summary.json").exists()
    assert main(["train", str(path), "--no-progress", "--resume"]) == 0
    assert_same_run(tmp_path / "interrupted", reference)


def test_a_sweep_stopped_at_its_writes_resumes_to_the_uninterrupted_runs(short_configs):
    """Two runs, 17 write boundaries each: the sweep is killed at boundaries of both runs (and
    between them), then started again as a user would (it resumes or skips each run)."""
    import yaml

    tmp_path, config, reference = short_configs
    base = config("sweep-base")
    spec = tmp_path / "sweep.yaml"
    spec.write_text(yaml.safe_dump({"base": base.name, "variants": [{"name": "a"},
                                                                     {"name": "b", "optimizer.lr": 0.02}]}))
    assert main(["sweep", str(spec), "--no-progress", "--output-root", str(tmp_path / "sweep-reference")]) == 0
    per_run = len(BOUNDARIES)
    for number in (3, 6, per_run, per_run + 1, per_run + 9, 2 * per_run - 2, 2 * per_run):
        root = tmp_path / f"sweep-{number}"
        done = run_child(["sweep", str(spec), "--no-progress", "--output-root", str(root)], hook=str(number))
        assert done.returncode == -signal.SIGKILL, (number, done.stderr[-2000:])
        assert main(["sweep", str(spec), "--no-progress", "--output-root", str(root)]) == 0, number
        for label in ("a", "b"):
            assert_same_run(root / label, tmp_path / "sweep-reference" / label)


def test_data_fingerprints_of_earlier_versions_are_the_same_data(tmp_path):
    """An example without partial-scoring pairs is fingerprinted as before they existed (no
    `partial` field), and the form prge wrote while it kept `partial: null` is accepted on
    resume as the same data; other data is still refused by name."""
    from types import SimpleNamespace

    from prge import checkpoints
    from prge.data.batching import EncodedExample
    from prge.run_dir import RunDirError

    examples = [EncodedExample([1, 5, 7], 1, options=[[3], [4]]), EncodedExample([1, 6], 0, options=[[3], [4]])]
    before_partial = [SimpleNamespace(prompt_ids=e.prompt_ids, label=e.label, answer_ids=None, options=e.options,
                                      reference=None, answer_length=0) for e in examples]
    splits = {"train": examples, "dev": [], "eval": examples[:1]}
    now = checkpoints.data_fingerprint(splits)
    assert now == checkpoints.data_fingerprint({**splits, "train": before_partial, "eval": before_partial[:1]})
    (null_form,) = checkpoints.earlier_data_fingerprints(splits)
    assert null_form["train"] != now["train"] and null_form["dev"] == now["dev"]
    checkpoints._check_same_data(tmp_path, null_form, now, False, None,
                                 lambda: checkpoints.earlier_data_fingerprints(splits))
    other = checkpoints.earlier_data_fingerprints({**splits, "train": examples[:1]})[0]
    with pytest.raises(RunDirError, match="the train data differ from the checkpoint's"):
        checkpoints._check_same_data(tmp_path, other, now, False, None,
                                     lambda: checkpoints.earlier_data_fingerprints(splits))
    # With pairs, they are part of the fingerprint.
    scored = [EncodedExample([1, 5], 0, options=[[3], [4]], partial=[([1, 2], [3]), ([1, 4], [3])])]
    assert checkpoints.data_fingerprint({"eval": scored}) != checkpoints.data_fingerprint(
        {"eval": [EncodedExample([1, 5], 0, options=[[3], [4]], partial=[([1, 2], [3]), ([1, 9], [3])])]})

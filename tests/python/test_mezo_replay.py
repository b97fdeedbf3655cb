"""run.checkpoint_format: updates. A full-parameter MeZO checkpoint holds every step's projected
gradients instead of the model's weights (MeZO's seed trick, Malladi et al. 2023, sec. 2); a
killed run resumed from it replays them on the base weights and ends bit for bit where an
uninterrupted run ends. Replayed weights that are not the checkpoint's (another base model,
edited updates) are refused by name, never trained on."""
import json
import signal

import pytest
from safetensors.torch import load_file

import prge
from conftest import make_tiny_assets, write_config, write_state
from prge.cli import main
from test_resume import child, records

STEPS = 8  # checkpoints at 2 and 4; the child is killed inside step 6


def mezo_config(tmp_path, model_dir, data_dir, name, optimizer=None, estimator=None, fmt="updates"):
    path = write_config(tmp_path, model_dir, data_dir,
                        estimator={"kind": "mezo", "queries": 2, "parallel": "sequential", "epsilon": 1e-3,
                                   **(estimator or {})},
                        optimizer=optimizer or {"lr": 2e-3, "momentum": 0.9},
                        run={"steps": STEPS, "eval_every": 3, "log_every": 1, "checkpoint_every": 2,
                             "checkpoint_format": fmt, "output_dir": str(tmp_path / name)})
    return path.rename(tmp_path / f"{name}.yaml")


def weights(run):
    return load_file(str(run / "trained.safetensors"))


@pytest.mark.parametrize("rng,optimizer", [("torch", {"lr": 2e-3, "momentum": 0.9}),
                                           ("counter", {"lr": 2e-3, "momentum": 0.9, "accumulate": 8}),
                                           ("torch", {"kind": "adam", "lr": 1e-4})])
def test_a_killed_mezo_run_resumes_from_its_updates_bit_identically(tmp_path, rng, optimizer):
    model_dir, data_dir = make_tiny_assets(tmp_path)
    settings = {"optimizer": optimizer, "estimator": {"rng": rng}}
    reference = mezo_config(tmp_path, model_dir, data_dir, "reference", fmt="weights", **settings)
    assert main(["train", str(reference), "--no-progress"]) == 0
    killed = mezo_config(tmp_path, model_dir, data_dir, "killed", **settings)
    assert child(["train", str(killed), "--no-progress"]).returncode == -signal.SIGKILL
    run = tmp_path / "killed"
    checkpoint = run / json.loads((run / "checkpoint.json").read_text())["directory"]
    assert checkpoint.name == "checkpoint-4" and not (checkpoint / "checkpoint.safetensors").exists()
    updates = json.loads((checkpoint / "state.json").read_text())["updates"]
    assert len(updates["projected_grads"]) == 4 and all(len(g) == 2 for g in updates["projected_grads"])
    # the steps moved the weights, or (accumulating over all 8) only the optimizer's sum: both fingerprinted
    assert updates["base"] != updates["weights"]
    assert main(["train", str(killed), "--no-progress", "--resume"]) == 0
    assert records(run) == records(tmp_path / "reference")
    ours, theirs = weights(run), weights(tmp_path / "reference")
    assert ours.keys() == theirs.keys() and all((ours[k] == theirs[k]).all() for k in ours)


def test_updates_replayed_on_other_weights_or_edited_are_refused_by_name(tmp_path, capsys):
    model_dir, data_dir = make_tiny_assets(tmp_path)
    killed = mezo_config(tmp_path, model_dir, data_dir, "killed")
    assert child(["train", str(killed), "--no-progress"]).returncode == -signal.SIGKILL
    state_path = tmp_path / "killed" / "checkpoint-4" / "state.json"
    state = json.loads(state_path.read_text())
    capsys.readouterr()
    # edited updates: state.json's sha256 no longer matches
    edited = json.loads(json.dumps(state))
    edited["updates"]["projected_grads"][2][1] *= 1.5
    state_path.write_text(json.dumps(edited))
    assert main(["train", str(killed), "--no-progress", "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"prge: error: {state_path}: the checkpoint is damaged or was edited: its fields do not match the sha256" in err
    # the same with its sha256 made anew (what a device computing the update differently leaves): the
    # replay does not reach the checkpoint's weights
    write_state(state_path, edited)
    assert main(["train", str(killed), "--no-progress", "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"prge: error: {state_path}: replaying 4 steps' updates gave weights and optimizer state with fingerprint" in err, err
    # a step's update missing: named before anything is replayed
    edited["updates"]["projected_grads"] = edited["updates"]["projected_grads"][:3]
    state_path.write_text(json.dumps(edited))
    assert main(["train", str(killed), "--no-progress", "--resume"]) == 2
    assert "updates.projected_grads is not a list of 4 steps' projected gradients" in capsys.readouterr().err
    # another base model under the same name
    state_path.write_text(json.dumps(state))
    from safetensors.torch import save_file

    tensors = load_file(str(model_dir / "model.safetensors"))
    tensors["model.norm.weight"] = tensors["model.norm.weight"] * 1.01
    save_file(tensors, str(model_dir / "model.safetensors"))
    assert main(["train", str(killed), "--no-progress", "--resume"]) == 2  # named by the model's fingerprint
    assert f"{state_path}: the run trained on another model than {model_dir} holds now" in capsys.readouterr().err
    write_state(state_path, {k: v for k, v in state.items() if k != "model"})  # a state written before it was stored
    assert main(["train", str(killed), "--no-progress", "--resume"]) == 2  # the replay's own check of its base
    assert "the model's weights are not the ones this run started from" in capsys.readouterr().err


def test_checkpoint_format_is_read_and_refused_where_it_does_not_apply(tmp_path):
    config = prge.parse_run_config("estimator: {kind: mezo}\nrun: {checkpoint_format: updates}\n")
    assert config.run.checkpoint_format == "updates" and "checkpoint_format: updates" in config.to_yaml()
    assert "checkpoint_format" not in prge.parse_run_config("run: {steps: 3}\n").to_yaml()  # stored configs read the same
    assert "checkpoint_format: weights" in prge.parse_run_config("run: {steps: 3}\n").to_yaml(every_key=True)
    for text, message in (("estimator: {kind: mezo}\nrun: {checkpoint_format: seeds}\n", "weights or updates, got 'seeds'"),
                          ("run: {checkpoint_format: updates}\n", "updates replays full-parameter MeZO's steps")):
        with pytest.raises(prge.ConfigError, match=f"run.checkpoint_format: .*{message}"):
            prge.parse_run_config(text)


def test_replay_step_is_the_steps_update(tmp_path):
    """Trainer.replay_step from a step's projected gradients gives the weights the step gave."""
    import torch

    from conftest import make_batch, make_hf_llama

    path, _ = make_hf_llama(tmp_path)
    estimator = prge.EstimatorOptions("mezo", 2, 1e-3, parallel="sequential")
    optimizer = prge.OptimizerOptions(lr=1e-3, momentum=0.9)
    stepped = prge.Trainer(prge.CausalLM.from_pretrained(str(path)), estimator, optimizer, 7)
    replayed = prge.Trainer(prge.CausalLM.from_pretrained(str(path)), estimator, optimizer, 7)
    assert stepped.state_fingerprint() == replayed.state_fingerprint()
    for step in range(3):
        result = stepped.step(make_batch(128, seed=step))
        replayed.replay_step(result.projected_grads)
        assert replayed.step_count == stepped.step_count == step + 1
        assert stepped.state_fingerprint() == replayed.state_fingerprint()
    for (name, a), (_, b) in zip(stepped.model.full_parameters(), replayed.model.full_parameters()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="3 projected gradients to replay, estimator.queries is 2"):
        replayed.replay_step([0.1, 0.2, 0.3])
    native = prge.CausalLM.from_pretrained(str(path))
    native.attach_adapters(prge.AdapterOptions(rank=4, alpha=8, init_seed=1))
    lora = prge.Trainer(native, prge.EstimatorOptions("prge", 1, 1e-3), optimizer, 7)
    with pytest.raises(ValueError, match="for full-parameter MeZO"):
        lora.replay_step([0.1])


def test_updates_are_refused_under_torchrun_before_anything_starts(tmp_path, capsys, monkeypatch):
    """A distributed step applies the host estimate, which a single-process replay would not
    reproduce bit for bit: refused by name, before any process group is made."""
    model_dir, data_dir = make_tiny_assets(tmp_path)
    config = mezo_config(tmp_path, model_dir, data_dir, "dist")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"prge: error: {config}:" in err and "run.checkpoint_format: updates is replayed as one process" in err, err
    assert not (tmp_path / "dist").exists()


def test_edited_updates_are_refused_while_the_optimizer_accumulates(tmp_path, capsys):
    """Inside an optimizer.accumulate window the weights have not moved: the fingerprint covers the
    optimizer's accumulated direction too, so an edited step is still refused."""
    model_dir, data_dir = make_tiny_assets(tmp_path)
    killed = mezo_config(tmp_path, model_dir, data_dir, "killed", optimizer={"lr": 2e-3, "accumulate": 8})
    assert child(["train", str(killed), "--no-progress"]).returncode == -signal.SIGKILL
    state_path = tmp_path / "killed" / "checkpoint-4" / "state.json"
    state = json.loads(state_path.read_text())
    state["updates"]["projected_grads"][2][1] *= 50
    write_state(state_path, state)  # past state.json's own sha256: the replay's check
    capsys.readouterr()
    assert main(["train", str(killed), "--no-progress", "--resume"]) == 2
    assert "replaying 4 steps' updates gave weights and optimizer state with fingerprint" in capsys.readouterr().err


@pytest.mark.parametrize("edit,message", [
    (lambda u: u["projected_grads"][0].__setitem__(0, 10 ** 400), "step 1: not a list of finite numbers"),
    (lambda u: u["projected_grads"][1].__setitem__(1, 1e300), "step 2: not a list of finite numbers"),
    (lambda u: u["projected_grads"][3].__setitem__(0, "0.5"), "step 4: not a list of finite numbers"),
    (lambda u: u.pop("base"), "updates.base and updates.weights must be 16-hex-digit fingerprints"),
    (lambda u: u.__setitem__("weights", None), "updates.base and updates.weights must be 16-hex-digit"),
])
def test_a_damaged_updates_checkpoint_is_named_not_a_traceback(tmp_path, capsys, edit, message):
    model_dir, data_dir = make_tiny_assets(tmp_path)
    killed = mezo_config(tmp_path, model_dir, data_dir, "killed")
    assert child(["train", str(killed), "--no-progress"]).returncode == -signal.SIGKILL
    state_path = tmp_path / "killed" / "checkpoint-4" / "state.json"
    state = json.loads(state_path.read_text())
    edit(state["updates"])
    state_path.write_text(json.dumps(state))
    capsys.readouterr()
    assert main(["train", str(killed), "--no-progress", "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"prge: error: {state_path}: the checkpoint is damaged or was edited" in err and message in err, err
    # updates gone altogether (and no checkpoint.safetensors in this format): named as such
    state.pop("updates")
    state_path.write_text(json.dumps(state))
    assert main(["train", str(killed), "--no-progress", "--resume"]) == 2
    assert "neither checkpoint.safetensors nor the updates of state.json" in capsys.readouterr().err


def test_weights_beside_updates_must_be_the_ones_the_updates_reach(tmp_path, capsys):
    """A checkpoint.safetensors found beside the updates (copied in by hand) is loaded only when it
    holds the state the updates reach: the run goes on appending to those updates."""
    from safetensors.torch import save_file

    model_dir, data_dir = make_tiny_assets(tmp_path)
    reference = mezo_config(tmp_path, model_dir, data_dir, "reference", fmt="weights")
    assert child(["train", str(reference), "--no-progress"]).returncode == -signal.SIGKILL
    killed = mezo_config(tmp_path, model_dir, data_dir, "killed")
    assert child(["train", str(killed), "--no-progress"]).returncode == -signal.SIGKILL
    tensors = load_file(str(tmp_path / "reference" / "checkpoint-4" / "checkpoint.safetensors"))
    beside = tmp_path / "killed" / "checkpoint-4" / "checkpoint.safetensors"
    name = next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 1)
    edited = {**tensors, name: tensors[name] * 1.01}
    save_file(edited, str(beside))
    capsys.readouterr()
    assert main(["train", str(killed), "--no-progress", "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"prge: error: {beside.parent / 'state.json'}: the updates reach weights and optimizer state" in err, err
    save_file(tensors, str(beside))  # the weights the updates reach (the same steps, the weights format)
    assert main(["train", str(killed), "--no-progress", "--resume"]) == 0
    assert main(["train", str(reference), "--no-progress", "--resume"]) == 0
    assert records(tmp_path / "killed") == records(tmp_path / "reference")
    ours, theirs = weights(tmp_path / "killed"), weights(tmp_path / "reference")
    assert all((ours[k] == theirs[k]).all() for k in ours)

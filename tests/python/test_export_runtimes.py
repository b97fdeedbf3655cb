"""Fine-tuning through unmodified inference runtimes. The exported P-RGE step (one
forward = perturb, 2q-copy forward, losses, fused ZO-SGD update) runs 20 steps through
ONNX Runtime (Python API and C++ API), AOTInductor (Python loader and C++ LibTorch
loader) and ExecuTorch (portable runtime, Python bindings), and must reproduce the C++ eager engine (estimator.rng: counter, same seed,
same batches).

Tolerance: the perturbations are the same integers everywhere (counter RNG of integer
ops); the runtimes differ only in float32 rounding (op order, fused vs separate GEMMs,
log/cos ulps). Step 1 agrees to ~1e-8 relative; the estimator then amplifies rounding
by 1/(2 eps) = 50 in g_i and feeds it back through B, so after 20 steps at a large lr
(5e-2, B moves visibly every step) the losses agree to 1e-4 relative and the final B to
1e-3 of its largest entry (ONNX Runtime, measured once: loss 1.1e-5 relative,
B 1.3e-4 absolute)."""
import json
import subprocess

import pytest
import torch
from safetensors.torch import load_file

import prge
from conftest import make_tiny_assets, write_config
from prge.cli import main

from installed import installed_module

installed_module("onnxruntime", "pip install onnxruntime")
installed_module("onnxscript", "pip install onnxscript")  # torch.onnx's exporter

STEPS = 20
LOSS_RTOL = 1e-4
B_RTOL = 1e-3  # of max |B|


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from prge.export.exporters import build_model
    from prge.export.run_data import RunData

    tmp = tmp_path_factory.mktemp("runtimes")
    model_dir, data_dir = make_tiny_assets(tmp)
    path = write_config(tmp, model_dir, data_dir,
                        estimator={"kind": "prge", "queries": 2, "parallel": "dual", "rng": "counter"},
                        optimizer={"lr": 5e-2},
                        run={"steps": STEPS, "eval_every": 0, "log_every": 1})
    config = prge.load_run_config(str(path))
    data = RunData(config)
    # The eager reference: prge's C++ engine on the same batches with the same seed.
    model = build_model(config, data)
    trainer = prge.Trainer(model, config.estimator, config.optimizer, config.run.seed)
    losses = [trainer.step(prge.TokenBatch(data.input_ids[s], data.targets[s])).loss for s in range(STEPS)]
    final_b = [a["lora_b"].clone() for a in model.adapters()]
    assert max(b.abs().max().item() for b in final_b) > 1e-3  # training moved B
    return tmp, path, config, data, losses, final_b


def assert_matches(losses, final_b, ref_losses, ref_b):
    assert len(losses) == len(ref_losses) == STEPS
    for got, want in zip(losses, ref_losses):
        assert abs(got - want) <= LOSS_RTOL * abs(want), (losses, ref_losses)
    assert len(final_b) == len(ref_b)
    worst = max((g.float() - w.float()).abs().max().item() for g, w in zip(final_b, ref_b))
    scale = max(w.abs().max().item() for w in ref_b)
    assert worst <= B_RTOL * scale, (worst, scale)


def run_cpp(export_dir):
    from prge.export.runners import runner_binary

    done = subprocess.run([str(runner_binary()), str(export_dir)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    manifest = json.loads((export_dir / "export.json").read_text())
    trained = load_file(str(export_dir / f"trained_b_{manifest['runtime']}.safetensors"))
    return [r["loss"] for r in records], [trained[f"b_{i}"] for i in range(len(trained))]


@pytest.mark.parametrize("runtime", ["onnx", "aoti", "executorch"])
def test_runtime_matches_eager_trainer(setup, runtime):
    from prge.export.exporters import export_run
    from prge.export.runners import open_runner

    if runtime == "executorch":
        installed_module("executorch", "pip install --no-deps executorch==1.5.1")
    tmp, _, config, data, ref_losses, ref_b = setup
    export_dir = export_run(config, runtime, tmp / f"export_{runtime}", data)
    runner = open_runner(export_dir)
    losses, lora_b = [], None
    for s in range(STEPS):
        loss, _, lora_b = runner.step(data.input_ids[s], data.targets[s], config.optimizer.lr,
                                      config.estimator.epsilon, prge.counter_step_key(config.run.seed, s))
        losses.append(loss)
    assert_matches(losses, lora_b, ref_losses, ref_b)  # the runtime's Python API
    if runtime != "executorch":  # a resumed run: a fresh runner given the B of step 10 goes on to the same B
        again, half = open_runner(export_dir), STEPS // 2
        for s in range(half):
            _, _, b_half = again.step(data.input_ids[s], data.targets[s], config.optimizer.lr,
                                      config.estimator.epsilon, prge.counter_step_key(config.run.seed, s))
        resumed = open_runner(export_dir)
        # as a resumed run gives them: views of one flat buffer (the model's B), which the caller
        # writes again afterwards, so set_b must take copies
        flat = torch.cat([b.flatten() for b in b_half])
        offsets = [0, *torch.tensor([b.numel() for b in b_half]).cumsum(0).tolist()]
        resumed.set_b([flat[o:o + b.numel()].view_as(b) for o, b in zip(offsets, b_half)])
        flat.fill_(float("nan"))
        for s in range(half, STEPS):
            _, _, b_end = resumed.step(data.input_ids[s], data.targets[s], config.optimizer.lr,
                                       config.estimator.epsilon, prge.counter_step_key(config.run.seed, s))
        assert all(torch.equal(x, y) for x, y in zip(b_end, lora_b))
    with pytest.raises(ValueError, match=r"exported for batches of \[batch_size, seq_len\]"):
        runner.step(data.input_ids[0][:, :-1], data.targets[0][:, :-1], 1e-3, 1e-2, 0)
    if runtime != "executorch":  # prge_run_exported drives ONNX Runtime and AOTInductor from C++
        assert_matches(*run_cpp(export_dir), ref_losses, ref_b)
        check_cpp_runner_errors(export_dir, tmp / f"damaged_{runtime}")


def check_cpp_runner_errors(export_dir, damaged):
    """prge_run_exported's bad input: one line naming the argument or file, status 1."""
    import shutil

    from safetensors.torch import save_file

    from prge.export.runners import runner_binary

    def error(directory, *args):
        done = subprocess.run([str(runner_binary()), str(directory), *args], capture_output=True, text=True, timeout=600)
        assert done.returncode == 1 and done.stderr.startswith("prge_run_exported: error: "), done.stderr
        assert len(done.stderr.splitlines()) == 1, done.stderr  # no C++ frames
        return done.stderr

    assert "--steps 12abc: give a whole number of steps >= 1" in error(export_dir, "--steps", "12abc")
    assert "--steps 0: give a whole number" in error(export_dir, "--steps", "0")
    assert "--out needs a value" in error(export_dir, "--out")
    # --out is checked before any step runs (a bad one lost the trained B after all of them)
    assert "--out needs a file path" in error(export_dir, "--out", "")
    assert f"--out {export_dir}: is a directory" in error(export_dir, "--out", str(export_dir))
    assert f"--out {export_dir / 'no' / 'b.safetensors'}: {export_dir / 'no'} is not a directory" in \
        error(export_dir, "--out", str(export_dir / "no" / "b.safetensors"))
    assert not list(export_dir.parent.glob("*.tmp"))
    usage = subprocess.run([str(runner_binary()), "--help"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 0 and usage.stdout.startswith("usage: prge_run_exported EXPORT_DIR"), usage
    out = export_dir / "options_first.safetensors"  # options may come before the directory
    done = subprocess.run([str(runner_binary()), "--steps", "1", "--out", str(out), str(export_dir)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 1 and out.is_file(), done.stderr
    manifest = json.loads((export_dir / "export.json").read_text())
    shutil.copytree(export_dir, damaged)
    (damaged / "export.json").write_text('{"runtime": ')
    assert f"{damaged / 'export.json'}: not readable JSON" in error(damaged)
    (damaged / "export.json").write_text(json.dumps(manifest))
    initial = load_file(str(damaged / manifest["initial_b"]))
    save_file({k: v for k, v in initial.items() if k != f"b_{len(initial) - 1}"}, str(damaged / manifest["initial_b"]))
    assert f"{damaged / manifest['initial_b']}: holds {len(initial) - 1} tensors, export.json names " \
        f"{len(initial)} adapters" in error(damaged)
    if manifest["runtime"] == "onnx":  # an AOTInductor package holds its B; ONNX Runtime is given it
        save_file({**initial, "b_0": initial["b_0"][:, :-1].contiguous()}, str(damaged / manifest["initial_b"]))
        assert f"(its inputs: {damaged / 'batches.safetensors'}, {damaged / manifest['initial_b']})" in error(damaged)
    save_file(initial, str(damaged / manifest["initial_b"]))
    model = damaged / manifest["model"]
    model.write_bytes(model.read_bytes()[:1000])
    assert f"{model}: not loadable by {manifest['runtime']}" in error(damaged)
    batches = load_file(str(damaged / "batches.safetensors"))
    save_file({k: v[:, :, :-1].contiguous() for k, v in batches.items()}, str(damaged / "batches.safetensors"))
    assert f"the step was exported for [steps, {manifest['batch_size']}, {manifest['seq_len']}]" in error(damaged)


@pytest.mark.parametrize("runtime", ["aoti", "executorch"])
def test_the_exported_step_starts_from_the_models_b(setup, runtime):
    """A run from adapter.init_from starts from a B that is not 0: the exported program keeps it
    (ExecuTorch left a mutated buffer's values out of the program, so it started from zeros)."""
    from prge.export.exporters import build_model, export_aoti, export_executorch
    from prge.export.runners import AotiRunner, EagerRunner, ExecuTorchRunner
    from prge.export.step_module import MutableBufferStep, StepSpec

    if runtime == "executorch":
        installed_module("executorch", "pip install --no-deps executorch==1.5.1")
    tmp, _, config, data, _, _ = setup
    model = build_model(config, data)
    torch.manual_seed(0)
    with torch.no_grad():
        for adapter in model.adapters():
            adapter["lora_b"].copy_(0.05 * torch.randn_like(adapter["lora_b"]))
    spec = StepSpec(config.estimator.queries, config.data.batch_size, config.data.max_length, data.answer_tokens,
                    config.estimator.distribution == "gaussian", "divide" if runtime == "executorch" else "shift")
    reference = EagerRunner(MutableBufferStep(model, spec))
    path = tmp / f"nonzero_b_{runtime}"
    if runtime == "aoti":
        runner = AotiRunner(export_aoti(MutableBufferStep(model, spec), path / "step.pt2"))
    else:
        runner = ExecuTorchRunner(export_executorch(MutableBufferStep(model, spec), path / "step.pte"))
    args = (data.input_ids[0], data.targets[0], config.optimizer.lr, config.estimator.epsilon,
            prge.counter_step_key(config.run.seed, 0))
    (want_loss, _, want_b), (loss, _, b) = reference.step(*args), runner.step(*args)
    assert loss == pytest.approx(want_loss, rel=1e-5)
    assert max((x - y).abs().max().item() for x, y in zip(b, want_b)) <= 1e-5 * max(y.abs().max().item() for y in want_b)


def test_train_through_runtime_cli(setup, capsys):
    tmp, path, config, _, ref_losses, ref_b = setup
    assert main(["train", str(path), "--runtime", "onnx", "--no-progress",
                 "--set", f"run.output_dir={tmp / 'engine_run'}"]) == 0
    summary = json.loads((tmp / "engine_run" / "summary.json").read_text())
    assert summary["runtime"] == "onnx" and summary["steps"] == STEPS
    assert "dequantized" not in capsys.readouterr().err  # a dense base gets no note on quantized weights
    # the summary of prge's own trainer, field for field but what only it measures
    assert main(["train", str(path), "--no-progress", "--set", f"run.output_dir={tmp / 'eager_run'}"]) == 0
    eager = json.loads((tmp / "eager_run" / "summary.json").read_text())
    assert set(eager) - set(summary) == {"gated_low_rank_kernel_ran"}
    for key in ("forward_passes", "sequences", "data_fingerprint", "model_fingerprint", "rng", "accuracy_before",
                "macro_f1_before"):
        assert summary[key] == eager[key], key
    assert summary["accuracy_after"] == eager["accuracy_after"]
    from prge.model_identity import model_fingerprint  # export and generate check it, as for prge's own runs

    assert summary["model_fingerprint"] == model_fingerprint(config.model.name)
    records = [json.loads(x) for x in (tmp / "engine_run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "eval_accuracy" in r] == [0, STEPS]  # as the C++ trainer records them
    assert_matches([r["loss"] for r in records if "loss" in r], ref_b, ref_losses, ref_b)
    # the trained checkpoint holds the engine's B
    saved = load_file(str(tmp / "engine_run" / "trained.safetensors"))
    assert len([k for k in saved if "lora_b" in k]) == len(ref_b)
    # configs the exported step cannot express are refused with the reason
    assert main(["export", str(path), "--runtime", "onnx", "--set", "estimator.rng=torch"]) == 2
    assert "estimator.rng must be 'counter'" in capsys.readouterr().err
    assert main(["export", str(path), "--runtime", "onnx", "--set", "estimator.parallel=queries"]) == 2
    assert "prge / dual / central" in capsys.readouterr().err
    # what the runtime loop would silently not do (review): refused by name
    for setting, words in (("model.dtype=bfloat16", "model.dtype must be float32"),
                           ("data.protocol=mezo", "data.protocol must be paper"),
                           ("run.eval_every=2", "run.eval_every: 2 is the C++ trainer's")):
        assert main(["export", str(path), "--runtime", "onnx", "--set", setting]) == 2
        assert words in capsys.readouterr().err, setting
    assert main(["export", str(path), "--runtime", "executorch", "--set", "run.checkpoint_every=2"]) == 2
    assert "a run through executorch cannot continue from a checkpoint" in capsys.readouterr().err
    assert main(["train", str(path), "--runtime", "executorch", "--resume", "--no-progress"]) == 2
    assert "executorch --resume: its Python bindings cannot set the program's B" in capsys.readouterr().err


def test_a_runtime_run_stopped_by_ctrl_c_resumes_to_the_uninterrupted_run(setup, capsys, monkeypatch):
    """Ctrl-C during step 7 of a run through ONNX Runtime: it stops after that step with a
    checkpoint, and --resume goes on to the uninterrupted run's losses and B."""
    import os
    import signal

    from prge.export import runners

    tmp, path, config, _, ref_losses, ref_b = setup
    run = ["train", str(path), "--runtime", "onnx", "--no-progress", "--set", f"run.output_dir={tmp / 'stopped'}"]
    real, calls = runners.CheckedRunner.step, []

    def step(self, *args):
        calls.append(1)
        if len(calls) == 7:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, *args)

    monkeypatch.setattr(runners.CheckedRunner, "step", step)
    assert main(run) == 2
    err = capsys.readouterr().err
    assert "interrupted after step 7: checkpoint saved" in err and "--runtime onnx --resume" in err, err
    assert not (tmp / "stopped" / "summary.json").exists()
    from prge import checkpoints

    real_fingerprint = checkpoints.data_fingerprint  # a data file edited since: named, with what can be done here
    monkeypatch.setattr(checkpoints, "data_fingerprint", lambda splits: {**real_fingerprint(splits), "train": "edited"})
    assert main(run + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert "the train data differ from the checkpoint's" in err and "Restore the files, or start the run again " \
        "with --overwrite" in err and "--resume-changed-data" not in err, err
    monkeypatch.setattr(checkpoints, "data_fingerprint", real_fingerprint)
    assert main(run + ["--resume"]) == 0
    assert len(calls) == STEPS
    records = [json.loads(x) for x in (tmp / "stopped" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, STEPS + 1))
    saved = load_file(str(tmp / "stopped" / "trained.safetensors"))
    names = json.loads((tmp / "stopped" / "export_onnx" / "export.json").read_text())["adapters"]  # adapter order
    assert_matches([r["loss"] for r in records if "loss" in r], [saved[f"{n}.lora_b"] for n in names],
                   ref_losses, ref_b)
    summary = json.loads((tmp / "stopped" / "summary.json").read_text())
    assert summary["resumed_after_step"] == 7 and summary["forward_passes"] == STEPS


def test_an_epsilon_that_moves_no_loss_stops_a_runtime_run_at_step_1(setup, capsys):
    """As prge train refuses it (preflight.check_losses_differ): every projected gradient of step 1
    exactly 0 names estimator.epsilon and the dtype."""
    tmp, path, _, _, _, _ = setup
    assert main(["train", str(path), "--runtime", "onnx", "--no-progress", "--set", f"run.output_dir={tmp / 'eps'}",
                 "--set", "estimator.epsilon=1e-30", "--set", "run.steps=2"]) == 2
    assert "estimator.epsilon: 1e-30 is too small for model.dtype float32: at step 1 every projected gradient is " \
        "exactly 0" in capsys.readouterr().err


def test_a_quantized_base_is_exported_dequantized(setup, capsys):
    """model.quantize int4 through a runtime: the step computes the int4 model's loss (its weights
    dequantized), and says that it holds them dequantized."""
    from prge.export.exporters import build_model
    from prge.export.run_data import RunData

    tmp, path, config, _, ref_losses, _ = setup
    out = tmp / "int4_run"
    assert main(["train", str(path), "--runtime", "onnx", "--no-progress", "--set", f"run.output_dir={out}",
                 "--set", "model.quantize=int4", "--set", "model.group_size=16", "--set", "run.steps=1"]) == 0
    assert "the base's projections are quantized, and the exported step holds them dequantized to float32" in \
        capsys.readouterr().err
    int4 = prge.parse_run_config(config.to_yaml(), "c.yaml", [("model.quantize", "int4"), ("model.group_size", "16"),
                                                                ("run.steps", "1")])
    data = RunData(int4)
    trainer = prge.Trainer(build_model(int4, data), int4.estimator, int4.optimizer, int4.run.seed)
    want = trainer.step(prge.TokenBatch(data.input_ids[0], data.targets[0])).loss
    got = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in x][0]["loss"]
    assert got == pytest.approx(want, rel=1e-6)
    assert abs(want - ref_losses[0]) > 1e-4 * abs(want)  # the int4 model's loss, not the dense model's


def test_a_failed_export_leaves_no_run_behind(setup, capsys, monkeypatch):
    """An export that fails (here: its exporter raises) takes the run's config.yaml and partial
    export with it: the same command runs again without --overwrite."""
    from prge.export import exporters

    tmp, path, _, _, _, _ = setup
    run = ["train", str(path), "--runtime", "onnx", "--no-progress", "--set", f"run.output_dir={tmp / 'failed_export'}",
           "--set", "run.steps=2"]

    def broken(step, out):
        (out.parent / "partial").write_text("")
        raise RuntimeError("the exporter failed")

    monkeypatch.setattr(exporters, "export_onnx", broken)
    assert main(run) == 2
    assert "the exporter failed" in capsys.readouterr().err
    assert [p.name for p in (tmp / "failed_export").iterdir() if not p.name.startswith(".")] == []
    def interrupted(step, out):
        raise KeyboardInterrupt  # Ctrl-C while exporting

    monkeypatch.setattr(exporters, "export_onnx", interrupted)
    assert main(run) == 2
    assert "nothing to resume; start it again with `prge train CONFIG --runtime onnx`" in capsys.readouterr().err
    assert [p.name for p in (tmp / "failed_export").iterdir() if not p.name.startswith(".")] == []
    monkeypatch.undo()
    assert main(run) == 0


def test_max_length_beyond_the_models_positions_is_refused_as_prge_train_refuses_it(setup):
    """data.max_length past max_position_embeddings: the C++ trainer refuses it too, so the
    runtime path names the key and the model's config.json as prge train does."""
    from prge.export.exporters import check_exportable

    _, _, config, _, _, _ = setup
    positions = json.load(open(f"{config.model.name}/config.json"))["max_position_embeddings"]
    longer = prge.parse_run_config(config.to_yaml(), "c.yaml", [("data.max_length", str(2 * positions))])
    with pytest.raises(ValueError, match=f"data.max_length: {2 * positions} exceeds the model's "
                                         f"max_position_embeddings {positions} "):
        check_exportable(longer, "onnx")


def test_longrope_switching_below_max_length_is_not_exported(setup):
    """The exported step builds RoPE once for data.max_length (LongRoPE's long factors), the C++
    trainer per batch (its short factors for short batches): refused rather than trained apart."""
    import shutil

    from prge.export.exporters import unexported_features

    tmp, _, config, _, _, _ = setup
    model_dir = tmp / "tiny_longrope"
    shutil.copytree(config.model.name, model_dir)
    values = json.loads((model_dir / "config.json").read_text())
    head = values["hidden_size"] // values["num_attention_heads"]
    values["rope_parameters"] = {"rope_type": "longrope", "rope_theta": 1e4, "original_max_position_embeddings": 12,
                                 "short_factor": [1.0] * (head // 2), "long_factor": [2.0] * (head // 2)}
    (model_dir / "config.json").write_text(json.dumps(values))
    longrope = prge.parse_run_config(config.to_yaml(), "c.yaml", [("model.name", str(model_dir))])
    assert any("LongRoPE switching factors below data.max_length" in p for p in unexported_features(longrope))
    fits = prge.parse_run_config(config.to_yaml(), "c.yaml", [("model.name", str(model_dir)), ("data.max_length", "12")])
    assert unexported_features(fits) == []

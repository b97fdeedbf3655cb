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
    if runtime != "executorch":  # prge_run_exported drives ONNX Runtime and AOTInductor from C++
        assert_matches(*run_cpp(export_dir), ref_losses, ref_b)


def test_train_through_runtime_cli(setup, capsys):
    tmp, path, config, _, ref_losses, ref_b = setup
    assert main(["train", str(path), "--runtime", "onnx", "--no-progress",
                 "--set", f"run.output_dir={tmp / 'engine_run'}"]) == 0
    summary = json.loads((tmp / "engine_run" / "summary.json").read_text())
    assert summary["runtime"] == "onnx" and summary["steps"] == STEPS
    from prge.model_identity import model_fingerprint  # export and generate check it, as for prge's own runs

    assert summary["model_fingerprint"] == model_fingerprint(config.model.name)
    records = [json.loads(x) for x in (tmp / "engine_run" / "metrics.jsonl").read_text().splitlines()]
    assert_matches([r["loss"] for r in records], ref_b, ref_losses, ref_b)
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
                           ("run.checkpoint_every=2", "run.checkpoint_every: 2 is the C++ trainer's"),
                           ("run.eval_every=2", "run.eval_every: 2 is the C++ trainer's")):
        assert main(["export", str(path), "--runtime", "onnx", "--set", setting]) == 2
        assert words in capsys.readouterr().err, setting
    assert main(["train", str(path), "--runtime", "onnx", "--resume", "--no-progress"]) == 2
    assert "nothing to --resume" in capsys.readouterr().err


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

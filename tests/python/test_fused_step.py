"""The fused P-RGE step (one device-side step: its forwards, answer-layout losses, g on the
device, the RGE direction over the flat adapter buffer) must equal the plain path it replaces (host-side estimate, per-matrix stacks of B copies, score_sequences losses).
A mis-sliced flat view, a wrong segment offset or param index in the direction, or a
mis-weighted answer row would each break it. Tolerance: the two paths sum the answer-token
losses in different orders (float32, a few ulps: up to 1.4e-6 at losses near 5, i.e. 3e-7
relative); g amplifies that by 1/(2 eps) and momentum carries it over 3 steps, so B agrees to
1e-5 (observed ~1e-6), losses to 1e-6 relative."""
import pytest
import torch

import prge
from conftest import make_batch
from test_prge_reference import EPS, LR, SEED, make_native


def run(path, fused, options, steps=3, momentum=0.0):
    native = make_native(path)
    trainer = prge.Trainer(native, options, prge.OptimizerOptions(lr=LR, momentum=momentum), SEED,
                           fused_step=fused)
    assert trainer.uses_fused_step == fused
    results = [trainer.step(make_batch(128, seed=s)) for s in range(steps)]
    return results, [a["lora_b"].clone() for a in native.adapters()]


@pytest.mark.parametrize("rng", ["torch", "counter"])
@pytest.mark.parametrize("difference", ["central", "forward"])
@pytest.mark.parametrize("queries", [1, 3])
@pytest.mark.parametrize("parallel", ["dual", "queries", "sequential"])
def test_fused_step_equals_plain_path(tiny_llama, rng, difference, queries, parallel):
    path, _ = tiny_llama
    options = prge.EstimatorOptions("prge", queries, EPS, difference, parallel, rng=rng)
    fused, fused_b = run(path, True, options, momentum=0.9)
    plain, plain_b = run(path, False, options, momentum=0.9)
    for f, p in zip(fused, plain):
        assert (f.forward_passes, f.sequences) == (p.forward_passes, p.sequences)
        torch.testing.assert_close(torch.tensor(f.losses), torch.tensor(p.losses), rtol=1e-6, atol=1e-6)
        # g = (L+ - L-) / 2eps or (L+ - L) / eps: the losses' tolerance, twice, over eps
        loss_tolerance = 1e-6 + 1e-6 * max(abs(x) for x in p.losses)
        torch.testing.assert_close(torch.tensor(f.projected_grads), torch.tensor(p.projected_grads),
                                   rtol=0, atol=2 * loss_tolerance / EPS)
        assert f.loss == pytest.approx(p.loss, rel=1e-6, abs=1e-6)
    for f, p in zip(fused_b, plain_b):
        torch.testing.assert_close(f, p, rtol=0, atol=1e-5)


def test_adapters_are_views_of_one_flat_buffer(tiny_llama):
    """Writing a B through its view is what the next step sees, and the step writes back."""
    path, _ = tiny_llama
    native = make_native(path)
    adapters = native.adapters()
    trainer = prge.Trainer(native, prge.EstimatorOptions("prge", 2, EPS), prge.OptimizerOptions(lr=LR), SEED)
    before = [a["lora_b"].clone() for a in adapters]
    trainer.step(make_batch(128))
    assert all(not torch.equal(a["lora_b"], b) for a, b in zip(adapters, before))
    assert not trainer.uses_cuda_graphs  # CPU: graphs never apply


def test_a_trainer_refuses_adapters_attached_after_it(tiny_llama):
    """attach_adapters again (a notebook cell run twice) makes new B tensors and a new flat buffer;
    the trainer's optimizer state and captured steps belong to the old ones, so stepping would
    update memory that is gone (CUDA graphs) or fail on a slot of another size: refused by name."""
    path, _ = tiny_llama
    native = make_native(path)
    trainer = prge.Trainer(native, prge.EstimatorOptions("prge", 2, EPS), prge.OptimizerOptions(lr=LR), SEED)
    trainer.step(make_batch(128))
    native.attach_adapters(prge.AdapterOptions(rank=4, alpha=8, init_seed=1))
    with pytest.raises(ValueError, match="adapters were attached again after this Trainer was made"):
        trainer.step(make_batch(128))
    fresh = prge.Trainer(native, prge.EstimatorOptions("prge", 2, EPS), prge.OptimizerOptions(lr=LR), SEED)
    assert fresh.step(make_batch(128)).loss > 0


def test_mezo_keeps_the_plain_path_on_the_cpu(tiny_llama):
    """MeZO's device step needs the CUDA kernels (its perturbed weights drawn in a kernel that reads
    the step key from device memory); on the CPU it takes the plain path."""
    path, _ = tiny_llama
    trainer = prge.Trainer(prge.CausalLM.from_pretrained(str(path)), prge.EstimatorOptions("mezo", 1, EPS, "central", "sequential"),
                           prge.OptimizerOptions(lr=LR), SEED)
    assert not trainer.uses_fused_step


def test_the_generator_defaults_to_auto_and_resolves_per_device(tiny_llama):
    """estimator.rng: auto (the default in configs, the Python API and the CLI) is the counter
    RNG on CUDA devices (the CUDA-graphed fused step; checked on the GPU by
    experiments/gpu_checks.py) and the torch generator elsewhere, which every earlier CPU run
    used: the same losses as an explicit rng: torch."""
    assert prge.EstimatorOptions("prge", 2).rng == "auto"
    assert prge.parse_run_config("run: {steps: 1}\n").estimator.rng == "auto"
    results = {}
    for rng in ("auto", "torch"):
        trainer = prge.Trainer(make_native(tiny_llama[0]), prge.EstimatorOptions("prge", 2, EPS, rng=rng),
                               prge.OptimizerOptions(lr=LR), SEED)
        assert trainer.rng == "torch" and "rng torch" in trainer.step_path
        results[rng] = trainer.step(make_batch(128)).losses
    assert results["auto"] == results["torch"]
    with pytest.raises(ValueError, match="allowed: auto, torch, counter"):
        prge.EstimatorOptions("prge", 2, rng="philox")


def test_prge_train_says_which_step_path_runs(tmp_path, capsys):
    import json

    from conftest import make_tiny_assets, write_config
    from prge.cli import main

    model_dir, data_dir = make_tiny_assets(tmp_path)
    config = write_config(tmp_path, model_dir, data_dir, run={"steps": 1, "eval_every": 0})
    assert main(["train", str(config), "--no-progress"]) == 0
    assert "[prge] step: fused device step, no CUDA graphs (not a CUDA device; rng torch)" in capsys.readouterr().out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["rng"] == "torch" and summary["step_path"].startswith("fused device step")
    assert summary["gated_low_rank_kernel_ran"] is False  # a CPU run: no variant applies

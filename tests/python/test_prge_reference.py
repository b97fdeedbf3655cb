"""P-RGE (outer + inner loop batching) must produce the same losses and the same B
update as a plain-PyTorch loop that evaluates each perturbation separately with the
same seeds (fp32, tolerance 1e-5). A mis-grouped batch, a wrong sign, a z that is not
regenerated identically, or a wrong 1/q or 1/2eps would each break it."""
import pytest
import torch

import prge
import reference
from conftest import make_batch

SEED, LR, EPS = 1234, 5e-3, 1e-2


def make_native(path, rank=4, **settings):
    native = prge.CausalLM.from_pretrained(str(path))
    native.attach_adapters(prge.AdapterOptions(rank=rank, alpha=8, init_seed=3, **settings))
    g = torch.Generator().manual_seed(5)
    for a in native.adapters():  # non-zero B so the perturbations act on a trained point
        a["lora_b"].copy_(0.05 * torch.randn(a["lora_b"].shape, generator=g))
    return native


@pytest.mark.parametrize("rng", ["torch", "counter"])
@pytest.mark.parametrize("parallel", ["dual", "queries", "sequential"])
@pytest.mark.parametrize("difference", ["central", "forward"])
@pytest.mark.parametrize("queries", [1, 3])
def test_prge_matches_reference(tiny_llama, parallel, difference, queries, rng):
    path, hf = tiny_llama
    native = make_native(path)
    adapters = native.adapters()
    b_before = [a["lora_b"].clone() for a in adapters]
    batch = make_batch(128)
    trainer = prge.Trainer(native, prge.EstimatorOptions(
        "prge", queries, EPS, difference, parallel, rng=rng), prge.OptimizerOptions(lr=LR), SEED)
    trainer.step_count = 7
    result = trainer.step(batch)

    ref_losses, ref_grads, ref_b = reference.rge_step(
        hf, adapters, b_before, batch, seed=SEED, step=7, queries=queries, epsilon=EPS, lr=LR,
        difference=difference, rng=rng)
    expected_passes = {"dual": 1, "queries": 2, "sequential": 2 * queries if difference == "central" else queries + 1}
    assert result.forward_passes == expected_passes[parallel]
    torch.testing.assert_close(torch.tensor(sorted(result.losses)), torch.tensor(sorted(ref_losses)),
                               rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.tensor(result.projected_grads), torch.tensor(ref_grads),
                               rtol=0, atol=2e-3)  # (1e-5 loss error) / (2 eps) amplification
    for a, expected, before in zip(adapters, ref_b, b_before):
        torch.testing.assert_close(a["lora_b"], expected, rtol=0, atol=1e-5)
        assert not torch.equal(a["lora_b"], before)  # the step moved every B


@pytest.mark.parametrize("parallel", ["dual", "sequential"])
def test_prge_with_per_module_ranks_and_scalings_matches_reference(tiny_llama, parallel):
    """PEFT-style rank_pattern / alpha_pattern / rsLoRA: the parts of a fused q/k/v or gate/up
    projection then have their own ranks and scalings (the per-part path under a plan)."""
    path, hf = tiny_llama
    native = make_native(path, use_rslora=True, rank_pattern={"k_proj": 2, "layers.1.mlp.up_proj": 6},
                         alpha_pattern={"q_proj": 16})
    adapters = native.adapters()
    assert len({a["scaling"] for a in adapters}) > 2 and len({a["lora_b"].shape[1] for a in adapters}) == 3
    b_before = [a["lora_b"].clone() for a in adapters]
    batch = make_batch(128)
    trainer = prge.Trainer(native, prge.EstimatorOptions("prge", 2, EPS, parallel=parallel),
                           prge.OptimizerOptions(lr=LR), SEED)
    result = trainer.step(batch)
    ref_losses, _, ref_b = reference.rge_step(hf, adapters, b_before, batch, seed=SEED, step=0, queries=2,
                                              epsilon=EPS, lr=LR)
    torch.testing.assert_close(torch.tensor(sorted(result.losses)), torch.tensor(sorted(ref_losses)),
                               rtol=0, atol=1e-5)
    for a, expected in zip(adapters, ref_b):
        torch.testing.assert_close(a["lora_b"], expected, rtol=0, atol=1e-5)


def test_dual_losses_are_in_plan_order(tiny_llama):
    """Dual lists [+eps z_0..z_{q-1}, -eps z_0..z_{q-1}]: check the order, not just the set."""
    path, hf = tiny_llama
    native = make_native(path)
    adapters = native.adapters()
    b = [a["lora_b"].clone() for a in adapters]
    batch = make_batch(128)
    stream = prge.PerturbationStream(SEED)
    plan = prge.PerturbationPlan.central_dual(stream, 2, 3, EPS)
    got = native.plan_losses(batch, plan)
    ref_losses, _, _ = reference.rge_step(hf, adapters, b, batch, seed=SEED, step=2, queries=3,
                                          epsilon=EPS, lr=0.0)
    torch.testing.assert_close(torch.tensor(got), torch.tensor(ref_losses), rtol=0, atol=1e-5)


def test_noise_matches_python_regeneration():
    stream = prge.PerturbationStream(99, "rademacher")
    assert prge.derive_seed(99, 4, 2, -1) == reference.derive_seed(99, 4, 2, -1)
    expected = reference.block_noise(99, 4, 2, 5, (7, 3), "rademacher")
    assert torch.equal(stream.noise_block(4, 2, 5, [7, 3]), expected)


def test_same_seed_runs_are_bit_identical(tiny_llama):
    path, _ = tiny_llama
    finals = []
    for _ in range(2):
        native = make_native(path)
        trainer = prge.Trainer(native, prge.EstimatorOptions("prge", 2, EPS), prge.OptimizerOptions(lr=LR, momentum=0.9), SEED)
        losses = [trainer.step(make_batch(128, seed=s)).losses for s in range(3)]
        finals.append((losses, [a["lora_b"].clone() for a in native.adapters()]))
    assert finals[0][0] == finals[1][0]
    assert all(torch.equal(x, y) for x, y in zip(finals[0][1], finals[1][1]))


def test_rge_direction_agrees_with_true_gradient(tiny_llama):
    """E[g z] is the gradient: with many queries the ZO direction must point along the
    backprop gradient (cosine well above 0; a sign error makes it negative)."""
    path, _ = tiny_llama
    fo_model = make_native(path)
    fo = prge.Trainer(fo_model, prge.EstimatorOptions("first_order"), prge.OptimizerOptions(lr=1.0), SEED)
    before = [a["lora_b"].clone() for a in fo_model.adapters()]
    batch = make_batch(128)
    fo.step(batch)
    true_grad = torch.cat([(b0 - a["lora_b"]).flatten() for b0, a in zip(before, fo_model.adapters())])

    zo_model = make_native(path)
    zo = prge.Trainer(zo_model, prge.EstimatorOptions("prge", 512, 1e-3), prge.OptimizerOptions(lr=1.0), SEED)
    zo.step(batch)
    zo_dir = torch.cat([(b0 - a["lora_b"]).flatten() for b0, a in zip(before, zo_model.adapters())])
    cosine = torch.nn.functional.cosine_similarity(true_grad, zo_dir, dim=0).item()
    # d ~ 2.7k trainable entries, q = 512: E[cos] ~ sqrt(q / (q + d)) ~ 0.4
    assert cosine > 0.25, cosine


def test_first_order_gradient_matches_autograd_reference(tiny_llama):
    path, hf = tiny_llama
    native = make_native(path)
    adapters = native.adapters()
    b0 = [a["lora_b"].clone() for a in adapters]
    batch = make_batch(128)
    trainer = prge.Trainer(native, prge.EstimatorOptions("first_order"), prge.OptimizerOptions(lr=0.1), SEED)
    trainer.step(batch)
    leaves = [b.clone().requires_grad_(True) for b in b0]
    with reference.lora_fa_hooks(hf, adapters, leaves):
        logits = hf(batch.input_ids).logits
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch.targets, ignore_index=-100, reduction="none")
        mask = batch.targets != -100
        loss = ((nll * mask).sum(1) / mask.sum(1)).mean()
        grads = torch.autograd.grad(loss, leaves)
    for a, b, g in zip(adapters, b0, grads):
        torch.testing.assert_close(a["lora_b"], b - 0.1 * g, rtol=0, atol=1e-6)


def test_counter_rng_python_equals_cpp():
    """The torch-op RNG that exported graphs run regenerates the C++ engine's z exactly."""
    from prge.export import counter_rng

    for distribution in ("gaussian", "rademacher"):
        stream = prge.PerturbationStream(123, distribution, "counter")
        z = stream.noise_block(7, 11, 3, [5, 6])
        key = torch.tensor(prge.counter_step_key(123, 7))
        keys = counter_rng.stream_keys(key, torch.tensor(counter_rng.coordinate_hashes(11, 3)))
        assert [prge.counter_stream_key(int(key), 11, i) for i in range(3)] == keys.tolist()
        python = counter_rng.noise(keys, 30, gaussian=distribution == "gaussian").view(3, 5, 6)
        assert torch.equal(z, python)

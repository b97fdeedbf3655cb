"""fold_lora_a: A stacked under W for o, down and q/k/v, so one GEMM gives [x Wᵀ | A x] and the
low-rank term adds into the first columns afterwards. It must change nothing but the rounding
order: logits, P-RGE and first-order steps, the adapters users see and export, against the same
model unfolded (the default). Projections it cannot take stay as they were."""
import pytest
import torch

import prge
from conftest import make_batch, make_hf_llama


def adapted(path, rank=8, dtype="float32", **settings):
    model = prge.CausalLM.from_pretrained(str(path), dtype=dtype)
    model.attach_adapters(prge.AdapterOptions(rank=rank, alpha=2 * rank, init_seed=3, **settings))
    g = torch.Generator().manual_seed(5)
    for a in model.adapters():  # a trained point: the low-rank term is not zero
        a["lora_b"].copy_(0.05 * torch.randn(a["lora_b"].shape, generator=g))
    return model


def trainer_of(model, estimator="prge", queries=3):
    mezo = estimator == "mezo"
    options = prge.EstimatorOptions(estimator, queries, 1e-3, "central", "sequential" if mezo else "dual", rng="counter")
    return prge.Trainer(model, options, prge.OptimizerOptions(lr=1e-5 if mezo else 1e-3, momentum=0.9), 7)


@pytest.fixture
def tiny(tmp_path):
    return make_hf_llama(tmp_path)[0]


def test_off_by_default_and_folds_o_down_and_qkv(tiny):
    model = adapted(tiny)
    assert model.fold_lora_a is False and model.lora_a_folded == []
    model.fold_lora_a = True
    assert model.lora_a_folded == [f"layers.{i}.{p}" for i in range(2) for p in ("q_proj", "k_proj", "v_proj", "o_proj", "down_proj")]
    model.fold_lora_a = False
    assert model.lora_a_folded == []


@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-5), ("bfloat16", 2e-2)])
def test_logits_and_adapters_are_unchanged(tiny, dtype, tolerance):
    model = adapted(tiny, dtype=dtype)
    ids = make_batch(128, batch=4, length=12).input_ids
    before = model.logits(ids)
    adapters = [{k: v.clone() for k, v in a.items() if isinstance(v, torch.Tensor)} for a in model.adapters()]
    model.fold_lora_a = True
    after = model.logits(ids)
    assert (after - before).abs().max() <= tolerance * before.abs().max()
    for old, new in zip(adapters, model.adapters()):
        for key, value in old.items():
            assert torch.equal(value, new[key]), key  # A moved storage, not value


@pytest.mark.parametrize("estimator", ["prge", "first_order", "mezo"])
def test_steps_train_as_unfolded(tiny, estimator):
    # first_order runs under autograd and MeZO's central difference passes a perturbed W: both take
    # the plain GEMMs, so these check that W and A moving into one storage leaves them as they were.
    runs = []
    for fold in (False, True):
        model = adapted(tiny)
        model.fold_lora_a = fold
        trainer = trainer_of(model, estimator, queries=3 if estimator == "prge" else 1)
        losses = [trainer.step(make_batch(128, seed=s)).loss for s in range(3)]
        runs.append((losses, torch.cat([a["lora_b"].flatten() for a in model.adapters()])))
    (plain_losses, plain_b), (folded_losses, folded_b) = runs
    torch.testing.assert_close(torch.tensor(folded_losses), torch.tensor(plain_losses), rtol=1e-5, atol=1e-6)
    # g = (L+ - L-) / 2 eps amplifies the losses' last-bit differences 500-fold, and momentum
    # carries them (as between the fused and plain steps, test_fused_step.py): B to 1e-5.
    torch.testing.assert_close(folded_b, plain_b, rtol=0, atol=1e-5)


def test_a_trainer_made_before_folding_refuses_to_step(tiny):
    model = adapted(tiny)
    trainer = trainer_of(model)
    trainer.step(make_batch(128))
    model.fold_lora_a = True  # W and A move into new storage
    with pytest.raises(ValueError, match=r"\(or fold_lora_a moved them into new storage\)"):
        trainer.step(make_batch(128))
    trainer_of(model).step(make_batch(128))  # a new trainer takes the folded model


def test_what_cannot_fold_stays_as_it_was(tiny):
    # Parts with their own scalings (alpha_pattern) run one by one, so q/k/v has no fused term
    # to fold; o and down, alone in their layers, still fold.
    model = adapted(tiny, alpha_pattern={"q_proj": 64.0})
    ids = make_batch(128, batch=2, length=9).input_ids
    before = model.logits(ids)
    model.fold_lora_a = True
    assert model.lora_a_folded == [f"layers.{i}.{p}" for i in range(2) for p in ("o_proj", "down_proj")]
    torch.testing.assert_close(model.logits(ids), before, rtol=1e-5, atol=1e-5)


def test_any_rank_folds_on_the_cpu(tiny):
    # rank 4 leaves rows of out + 4 elements: not 16 bytes apart, which only the CUDA kernels need.
    model = adapted(tiny, rank=4)
    ids = make_batch(128, batch=2, length=9).input_ids
    before = model.logits(ids)
    model.fold_lora_a = True
    assert len(model.lora_a_folded) == 10
    torch.testing.assert_close(model.logits(ids), before, rtol=1e-5, atol=1e-5)


def test_biased_projections_keep_their_own_gemm(tmp_path):
    import transformers
    config = transformers.Qwen2Config(vocab_size=128, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    torch.manual_seed(0)
    transformers.Qwen2ForCausalLM(config).save_pretrained(tmp_path / "qwen2")
    model = adapted(tmp_path / "qwen2")
    ids = make_batch(128, batch=3, length=10).input_ids
    before = model.logits(ids)
    model.fold_lora_a = True
    # q/k/v carry biases (Qwen2): only o and down fold.
    assert model.lora_a_folded == [f"layers.{i}.{p}" for i in range(2) for p in ("o_proj", "down_proj")]
    after = model.logits(ids)
    assert (after - before).abs().max() <= 1e-5 * before.abs().max()


def test_attaching_again_folds_the_new_adapters(tiny):
    model = adapted(tiny)
    model.fold_lora_a = True
    model.attach_adapters(prge.AdapterOptions(rank=16, alpha=32, init_seed=9))
    assert len(model.lora_a_folded) == 10
    unfolded = prge.CausalLM.from_pretrained(str(tiny))
    unfolded.attach_adapters(prge.AdapterOptions(rank=16, alpha=32, init_seed=9))
    for a in list(model.adapters()) + list(unfolded.adapters()):
        a["lora_b"].fill_(0.01)
    ids = make_batch(128, batch=2, length=8).input_ids
    torch.testing.assert_close(model.logits(ids), unfolded.logits(ids), rtol=1e-5, atol=1e-5)


def test_mezo_forward_difference_on_a_folded_model_is_refused(tiny):
    # θ's loss would take the folded GEMMs, θ + εz's (a perturbed W) the plain ones: g = ΔL / ε
    # would magnify their different rounding.
    model = adapted(tiny)
    model.fold_lora_a = True
    options = prge.EstimatorOptions("mezo", 1, 1e-3, "forward", "sequential")
    with pytest.raises(ValueError, match="mezo with a forward difference on a model with fold_lora_a on"):
        prge.Trainer(model, options, prge.OptimizerOptions(lr=1e-5), 7)
    model.fold_lora_a = False
    prge.Trainer(model, options, prge.OptimizerOptions(lr=1e-5), 7).step(make_batch(128))


def test_greedy_generation_is_unchanged(tiny):
    model = adapted(tiny)
    prompts = [[5, 9, 17, 3], [44, 2, 8]]
    before = model.generate(prompts, max_new_tokens=12)
    model.fold_lora_a = True
    assert model.generate(prompts, max_new_tokens=12) == before


def test_a_quantized_base_does_not_fold(tiny):
    # Its W is dequantized for each call (passed as the call's weight): nothing to stack A under.
    model = prge.CausalLM.from_pretrained(str(tiny), quantize="int8")
    model.attach_adapters(prge.AdapterOptions(rank=8, alpha=16, init_seed=3))
    ids = make_batch(128, batch=2, length=9).input_ids
    before = model.logits(ids)
    model.fold_lora_a = True
    assert model.lora_a_folded == []
    assert torch.equal(model.logits(ids), before)

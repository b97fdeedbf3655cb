"""Every supported family computes transformers' function on the same weights: logits (fp32,
1e-4 of the logits' scale) for tiny random configs with each family's features switched on
(biases, q/k norms, sliding windows shorter than the sequence, Gemma's norms, scales,
soft-capping and two RoPE sets, Phi-3's fused tensors, partial rotation and LongRoPE), a
right-padded batch, lengths up to 2048, greedy KV-cache generation token for token; every
estimator trains on each; and an unknown family is refused naming the nearest supported one."""
import json

import pytest
import torch

import prge

V = 97


def family_model(kind: str):
    """(transformers model, model_type) of a small random model of the family `kind`."""
    import transformers as t

    common = dict(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=4096, initializer_range=0.2)
    configs = {
        "llama_biases": lambda: t.LlamaConfig(**common, head_dim=24, attention_bias=True, mlp_bias=True),
        "mistral_window": lambda: t.MistralConfig(**common, sliding_window=24),
        "mistral_full": lambda: t.MistralConfig(**common, sliding_window=None, tie_word_embeddings=True),
        "ministral": lambda: t.MinistralConfig(
            **common, head_dim=24, sliding_window=24,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"]),
        "qwen2": lambda: t.Qwen2Config(**common, tie_word_embeddings=True),
        "qwen2_window": lambda: t.Qwen2Config(**common, use_sliding_window=True, sliding_window=20,
                                              max_window_layers=1),
        "qwen3": lambda: t.Qwen3Config(**common, head_dim=24),
        "qwen3_bias_window": lambda: t.Qwen3Config(**common, head_dim=16, attention_bias=True,
                                                   use_sliding_window=True, sliding_window=20, max_window_layers=1),
        "gemma3_text": lambda: t.Gemma3TextConfig(
            **{**common, "num_hidden_layers": 4}, head_dim=16, query_pre_attn_scalar=20, sliding_window=24,
            layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
            final_logit_softcapping=5.0,
            rope_parameters={"full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1e5},
                             "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}),
        "gemma3": lambda: t.Gemma3Config(  # the multimodal wrapper, with a vision tower of its own
            text_config=dict(**{**common, "num_hidden_layers": 2}, head_dim=16, sliding_window=24,
                             layer_types=["sliding_attention", "full_attention"]),
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                               image_size=28, patch_size=14),
            mm_tokens_per_image=4, image_token_index=V - 1, boi_token_index=V - 2, eoi_token_index=V - 3),
        "phi3": lambda: t.Phi3Config(**common, sliding_window=40, pad_token_id=0),
        "phi3_partial_longrope": lambda: t.Phi3Config(
            **{**common, "max_position_embeddings": 1024}, pad_token_id=0, partial_rotary_factor=0.5,
            original_max_position_embeddings=256,
            rope_parameters={"rope_type": "longrope", "rope_theta": 1e4, "partial_rotary_factor": 0.5,
                             "short_factor": [1.0 + 0.1 * i for i in range(4)],
                             "long_factor": [1.5 + 0.5 * i for i in range(4)]}),
    }
    config = configs[kind]()
    torch.manual_seed(0)
    model = t.AutoModelForCausalLM.from_config(config).float().eval()
    with torch.no_grad():  # norms away from their init, so that a wrong norm form shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    return model, config.model_type


FAMILIES = ["llama_biases", "mistral_window", "mistral_full", "ministral", "qwen2", "qwen2_window", "qwen3",
            "qwen3_bias_window", "gemma3_text", "phi3", "phi3_partial_longrope"]


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tmp_path_factory):
    hf, model_type = family_model(request.param)
    path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(path)
    return request.param, model_type, path, hf


def assert_logits_close(got, expected, what):
    scale = max(expected.abs().max().item(), 1.0)
    err = (got - expected).abs().max().item()
    assert err <= 1e-4 * scale, f"{what}: max error {err:.3g} (logit scale {scale:.3g})"


def test_logits_match_transformers_up_to_2048(family):
    name, model_type, path, hf = family
    native = prge.CausalLM.from_pretrained(str(path))
    assert native.spec.model_type == model_type
    g = torch.Generator().manual_seed(1)
    for length in (80, 2048):
        ids = torch.randint(0, V, (1 if length > 100 else 2, length), generator=g)
        with torch.no_grad():
            expected = hf(ids).logits
        assert_logits_close(native.logits(ids), expected, f"{name}, length {length}")


def test_right_padded_batch_matches_each_sequence_alone(family):
    name, _, path, hf = family
    native = prge.CausalLM.from_pretrained(str(path))
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(1, V, (3, 50), generator=g)
    lengths = [50, 37, 12]
    for i, n in enumerate(lengths):
        ids[i, n:] = 0
    got = native.logits(ids)
    for i, n in enumerate(lengths):
        with torch.no_grad():
            expected = hf(ids[i:i + 1, :n]).logits[0]
        assert_logits_close(got[i, :n], expected, f"{name}, row {i}")


def test_greedy_generation_matches_transformers(family):
    name, _, path, hf = family
    native = prge.CausalLM.from_pretrained(str(path))
    prompt = torch.randint(1, V, (1, 30), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = hf.generate(prompt, max_new_tokens=16, do_sample=False, pad_token_id=0, eos_token_id=None)
    assert native.generate([prompt[0].tolist()], max_new_tokens=16)[0] == expected[0, 30:].tolist(), name


@pytest.mark.parametrize("kind", ["prge", "fzoo", "mezo", "first_order"])
def test_every_estimator_trains_every_family(family, kind):
    from conftest import make_batch

    name, _, path, _ = family
    native = prge.CausalLM.from_pretrained(str(path))
    if kind != "mezo":
        native.attach_adapters(prge.AdapterOptions(rank=4, alpha=8))
        trained = lambda: torch.cat([a["lora_b"].flatten() for a in native.adapters()]).clone()  # noqa: E731
    else:
        trained = lambda: torch.cat([t.flatten() for _, t in native.full_parameters()]).clone()  # noqa: E731
    estimator = prge.EstimatorOptions(kind, 1 if kind in ("mezo", "first_order") else 2, 1e-2,
                                      parallel="sequential" if kind == "mezo" else "dual")
    trainer = prge.Trainer(native, estimator, prge.OptimizerOptions(lr=1e-2), 7)
    before = trained()
    for s in range(2):
        result = trainer.step(make_batch(V, seed=s))
        assert torch.isfinite(torch.tensor(result.loss)), (name, kind)
    assert not torch.equal(trained(), before), f"{name}: {kind} moved nothing"


def test_mezo_parameter_order_follows_the_family_table(family):
    """full_parameters lists every checkpoint tensor once, in the table's order (MeZO's seeds)."""
    from safetensors.torch import load_file

    name, _, path, _ = family
    native = prge.CausalLM.from_pretrained(str(path))
    names = [n for n, _ in native.full_parameters()]
    stored = set(load_file(str(path / "model.safetensors")))
    assert set(names) == stored - {"lm_head.weight"} | ({"lm_head.weight"} & stored), name
    per_layer = native.spec.layer_weight_names
    assert names[1: 1 + len(per_layer)] == [f"model.layers.0.{n}" for n in per_layer]


def test_llama_parameter_order_and_seeds_are_unchanged(tmp_path):
    """Llama's MeZO order (and so every z of a Llama run) is what it was before the seam."""
    import transformers as t

    config = t.LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1)
    t.LlamaForCausalLM(config).save_pretrained(tmp_path)
    names = [n for n, _ in prge.CausalLM.from_pretrained(str(tmp_path)).full_parameters()]
    layer = ["input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
             "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    assert names == (["model.embed_tokens.weight"] + [f"model.layers.{i}.{n}.weight" for i in range(2) for n in layer]
                     + ["model.norm.weight", "lm_head.weight"])


@pytest.mark.parametrize("model_type,nearest", [("qwen2_moe", "qwen2"), ("gemma2", "gemma3"), ("mamba", "llama")])
def test_unknown_families_are_refused_naming_the_nearest(tmp_path, model_type, nearest):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type, "vocab_size": 8}))
    with pytest.raises(RuntimeError, match=f"model_type '{model_type}' is not supported .*nearest: {nearest}"):
        prge.ArchSpec.from_json_file(str(tmp_path / "config.json"))


def test_phi3_targets_its_fused_projections(tmp_path):
    hf, _ = family_model("phi3")
    hf.save_pretrained(tmp_path)
    native = prge.CausalLM.from_pretrained(str(tmp_path))
    assert native.spec.projections == ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
    native.attach_adapters(prge.AdapterOptions(rank=2, alpha=4))  # the 7 default names: all four fused
    assert [a["name"] for a in native.adapters()][:4] == ["layers.0.qkv_proj", "layers.0.o_proj",
                                                         "layers.0.gate_up_proj", "layers.0.down_proj"]
    with pytest.raises(ValueError, match="target all of q_proj, k_proj, v_proj or qkv_proj"):
        prge.CausalLM.from_pretrained(str(tmp_path)).attach_adapters(prge.AdapterOptions(targets=["q_proj"]))


# Keys Phi-4-mini's config.json carries for its own modeling code, at the values it ships.
PHI4_MINI_KEYS = {"full_attn_mod": 1, "interpolate_factor": 1, "lm_head_bias": False, "mlp_bias": False}


def test_phi4_mini_keys_are_accepted_at_their_plain_values(tmp_path):
    hf, _ = family_model("phi3")
    hf.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, **PHI4_MINI_KEYS}))
    ids = torch.randint(0, V, (2, 40), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = hf(ids).logits
    assert_logits_close(prge.CausalLM.from_pretrained(str(tmp_path)).logits(ids), expected, "phi-4-mini keys")


@pytest.mark.parametrize("key,value", [("full_attn_mod", 2), ("interpolate_factor", 2.0), ("lm_head_bias", True),
                                       ("mlp_bias", True)])
def test_phi4_mini_keys_at_other_values_are_refused_by_name(tmp_path, key, value):
    hf, _ = family_model("phi3")
    hf.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, **PHI4_MINI_KEYS, key: value}))
    with pytest.raises(RuntimeError, match=f"config.json: {key}: .* is not supported"):
        prge.CausalLM.from_pretrained(str(tmp_path))

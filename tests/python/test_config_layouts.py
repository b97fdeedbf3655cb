"""config.json layouts that transformers reads in a family's own way (its config class's
defaults and conversions), each loaded by transformers and by prge from the same directory:
the logits agree, or prge refuses the layout by name. Tiny random float32 models made here."""
import json

import pytest
import torch

import prge

V = 97
COMMON = dict(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.2)
LONGROPE = {"rope_type": "longrope", "rope_theta": 1e4, "short_factor": [1.0 + 0.1 * i for i in range(8)],
            "long_factor": [1.5 + 0.5 * i for i in range(8)]}
GEMMA = dict(COMMON, num_hidden_layers=4, head_dim=16, query_pre_attn_scalar=20, sliding_window=24,
             layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"])
GEMMA_DEFAULT_ROPE = {"full_attention": {"rope_type": "default", "rope_theta": 1e4},
                      "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}


def gemma_rope(full: dict) -> dict:
    return {"full_attention": {**full, "rope_theta": 1e4}, "sliding_attention": {"rope_type": "default",
                                                                                 "rope_theta": 1e4}}


def saved(tmp_path, config, edit=None):
    """A random model of the transformers `config`, saved; `edit(dict)` then rewrites config.json."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).float().eval()
    model.save_pretrained(tmp_path / "model")
    if edit:
        path = tmp_path / "model" / "config.json"
        values = json.loads(path.read_text())
        edit(values)
        path.write_text(json.dumps(values))
    return tmp_path / "model"


def transformers_config(kind: str, **values):
    import transformers

    return getattr(transformers, kind)(**values)


# name -> (transformers config class, its values, edit of the saved config.json)
MATCHING = {
    # A mistral config with layer_types is a ministral model to transformers: the window on
    # the sliding_attention layers only.
    "mistral_layer_types": ("MistralConfig", dict(COMMON, num_hidden_layers=3, sliding_window=12),
                            lambda c: c.update(layer_types=["sliding_attention", "full_attention",
                                                            "sliding_attention"])),
    "mistral_layer_types_all_full": ("MistralConfig", dict(COMMON, num_hidden_layers=3, sliding_window=12),
                                     lambda c: c.update(layer_types=["full_attention"] * 3)),
    # Phi3Config's own original_max_position_embeddings (4096) is put above the one inside rope_parameters.
    "phi3_original_max_only_in_rope_parameters": (
        "Phi3Config", dict(COMMON, pad_token_id=0, original_max_position_embeddings=64, rope_parameters=LONGROPE),
        lambda c: (c.pop("original_max_position_embeddings"),
                   c["rope_parameters"].update(original_max_position_embeddings=64))),
    # `rope_scaling or rope_parameters`: an empty rope_scaling counts as none.
    "llama_empty_rope_scaling": ("LlamaConfig", dict(COMMON, rope_parameters={"rope_type": "linear", "factor": 4.0,
                                                                               "rope_theta": 500.0}),
                                 lambda c: c.update(rope_scaling={})),
    # Gemma 3: a set without rope_theta takes rope_theta (full) or rope_local_base_freq (sliding).
    "gemma3_sets_without_theta": ("Gemma3TextConfig", dict(GEMMA, rope_parameters=GEMMA_DEFAULT_ROPE),
                                  lambda c: c.update(rope_parameters={"full_attention": {"rope_type": "default"},
                                                                      "sliding_attention": {"rope_type": "default"}},
                                                     rope_theta=5e4, rope_local_base_freq=200.0)),
    # Gemma 3: a set's own original_max_position_embeddings, not a top-level one.
    "gemma3_top_level_original_max": (
        "Gemma3TextConfig", dict(GEMMA, rope_parameters=gemma_rope({"rope_type": "llama3", "factor": 8.0,
                                                                    "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                                    "original_max_position_embeddings": 128})),
        lambda c: c.update(original_max_position_embeddings=16)),
    # Gemma 3 as transformers 4.x saved it: rope_scaling, rope_theta, rope_local_base_freq. Its
    # full-attention set starts as {rope_type: default}, so a rope_scaling spelled with "type"
    # (not "rope_type") scales nothing in transformers 5.24.
    "gemma3_legacy_rope_scaling": ("Gemma3TextConfig", dict(GEMMA, rope_parameters=GEMMA_DEFAULT_ROPE),
                                   lambda c: (c.pop("rope_parameters"),
                                              c.update(rope_scaling={"factor": 8.0, "rope_type": "linear"},
                                                       rope_theta=1e4, rope_local_base_freq=100.0))),
    "gemma3_legacy_rope_scaling_with_type": ("Gemma3TextConfig", dict(GEMMA, rope_parameters=GEMMA_DEFAULT_ROPE),
                                             lambda c: (c.pop("rope_parameters"),
                                                        c.update(rope_scaling={"factor": 8.0, "type": "linear"},
                                                                 rope_theta=1e4, rope_local_base_freq=100.0))),
    # Gemma 3: a legacy rope_scaling beside per-type rope_parameters scales the full-attention set only.
    "gemma3_rope_scaling_beside_sets": ("Gemma3TextConfig", dict(GEMMA, rope_parameters=GEMMA_DEFAULT_ROPE),
                                        lambda c: c.update(rope_scaling={"rope_type": "linear", "factor": 8.0})),
    # json.dumps (as transformers saves) writes a character outside the BMP as a surrogate pair,
    # "\ud83d\ude00", which yaml-cpp alone refuses; an underflowing number reads as Python reads it.
    "llama_emoji_written_as_surrogates": ("LlamaConfig", dict(COMMON),
                                          lambda c: c.update(_name_or_path="tiny \U0001F600 llama")),
    "llama_eps_subnormal": ("LlamaConfig", dict(COMMON), lambda c: c.update(rms_norm_eps=1e-310)),
    # YaRN's betas as transformers reads them (`get("beta_fast") or 32`): 0 is the default.
    "llama_yarn_betas_zero": ("LlamaConfig", dict(COMMON, rope_parameters={
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32, "rope_theta": 1e4}),
        lambda c: c["rope_parameters"].update(beta_fast=0, beta_slow=0.0)),
    # num_key_value_heads null: every config class but Gemma 3's reads it as num_attention_heads
    # (Qwen2's default for a missing key is 32).
    "qwen2_kv_heads_null": ("Qwen2Config", dict(COMMON, num_key_value_heads=4),
                            lambda c: c.update(num_key_value_heads=None)),
    # MistralConfig does not read use_sliding_window: the window follows sliding_window alone.
    "mistral_use_sliding_window_false": ("MistralConfig", dict(COMMON, sliding_window=12),
                                         lambda c: c.update(use_sliding_window=False)),
    # Gemma3ForConditionalGeneration does not apply text_config's final_logit_softcapping.
    "gemma3_wrapper_soft_cap": ("Gemma3Config", dict(
        text_config=dict(GEMMA, num_hidden_layers=2, layer_types=["sliding_attention", "full_attention"],
                         final_logit_softcapping=4.0),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=28, patch_size=14),
        mm_tokens_per_image=4, image_token_index=V - 1, boi_token_index=V - 2, eoi_token_index=V - 3), None),
    # ... whatever its value: 0.0 too (Gemma3ForCausalLM would divide by it; prge refused it).
    "gemma3_wrapper_soft_cap_zero": ("Gemma3Config", dict(
        text_config=dict(GEMMA, num_hidden_layers=2, layer_types=["sliding_attention", "full_attention"]),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=28, patch_size=14),
        mm_tokens_per_image=4, image_token_index=V - 1, boi_token_index=V - 2, eoi_token_index=V - 3),
        lambda c: c["text_config"].update(final_logit_softcapping=0.0)),
    # A whole number written as a float: Python's (i + 1) % 2.0 reads it as 2 (prge refused it).
    "gemma3_window_pattern_float": ("Gemma3TextConfig", dict(GEMMA, rope_parameters=GEMMA_DEFAULT_ROPE),
                                    lambda c: (c.pop("layer_types"), c.update(sliding_window_pattern=2.0))),
    # A generation setting (google/gemma-3-1b-it's) and re-uploaders' bookkeeping.
    "gemma3_cache_implementation": ("Gemma3TextConfig", dict(GEMMA, rope_parameters=GEMMA_DEFAULT_ROPE),
                                    lambda c: c.update(cache_implementation="hybrid", unsloth_fixed=True,
                                                       unsloth_version="2025.3.1")),
}


@pytest.mark.parametrize("case", sorted(MATCHING))
def test_layouts_read_as_transformers_reads_them(tmp_path, case):
    from transformers import AutoModelForCausalLM

    kind, values, edit = MATCHING[case]
    model_dir = saved(tmp_path, transformers_config(kind, **values), edit)
    hf = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    native = prge.CausalLM.from_pretrained(str(model_dir))
    ids = torch.randint(0, V, (1, 100), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(ids).logits
    scale = expected.abs().max().item()
    assert (native.logits(ids) - expected).abs().max().item() <= 1e-4 * scale, case


# name -> (config class, values, edit, words of the refusal)
REFUSED = {
    "layer_types_too_short": ("Qwen2Config", dict(COMMON, use_sliding_window=True, sliding_window=8),
                              lambda c: c.update(layer_types=["full_attention"]), "layer_types: 1 entries for"),
    "layer_types_unknown_kind": ("Qwen3Config", dict(COMMON, head_dim=16),
                                 lambda c: c.update(layer_types=["full_attention", "chunked_attention"]),
                                 "layer_types: layer 1: attention type 'chunked_attention' is not supported"),
    "gemma3_flat_rope_parameters": ("Gemma3TextConfig", dict(GEMMA, rope_parameters=GEMMA_DEFAULT_ROPE),
                                    lambda c: c.update(rope_parameters={"rope_type": "linear", "factor": 8.0,
                                                                        "rope_theta": 1e4}),
                                    "rope_parameters: 'rope_type' outside full_attention / sliding_attention"),
    "gemma3_yarn_truncate_false": (
        "Gemma3TextConfig", dict(GEMMA, rope_parameters=gemma_rope({"rope_type": "yarn", "factor": 4.0,
                                                                    "original_max_position_embeddings": 64,
                                                                    "truncate": False})),
        None, "full_attention: truncate false is not supported"),
    # A window of 0 or less (transformers fails on it; prge read it as no window) and Gemma 3
    # without a window for its sliding layers (transformers fails; prge took 4096).
    "mistral_window_zero": ("MistralConfig", dict(COMMON, sliding_window=8),
                            lambda c: c.update(sliding_window=0), "sliding_window: 0 is not a window"),
    "ministral_window_negative": ("MinistralConfig", dict(COMMON, head_dim=16, sliding_window=8),
                                  lambda c: c.update(sliding_window=-5), "sliding_window: -5 is not a window"),
    "qwen2_window_zero": ("Qwen2Config", dict(COMMON, use_sliding_window=True, sliding_window=8),
                          lambda c: c.update(sliding_window=0), "sliding_window: 0 is not a window"),
    # Qwen layer_types naming a sliding layer where no window applies (transformers fails; prge
    # read every layer as full).
    "qwen2_sliding_layer_without_window": ("Qwen2Config", dict(COMMON, use_sliding_window=True, sliding_window=8,
                                                               max_window_layers=1),
                                           lambda c: c.update(sliding_window=None),
                                           "layer_types: layer 1 is sliding_attention and no window applies "
                                           "(sliding_window is null)"),
    "qwen3_sliding_layer_window_off": ("Qwen3Config", dict(COMMON, head_dim=16),
                                       lambda c: c.update(layer_types=["full_attention", "sliding_attention"]),
                                       "layer_types: layer 1 is sliding_attention and no window applies "
                                       "(use_sliding_window is false)"),
    # Values without meaning: transformers fails on them, divides by zero or computes NaN.
    "gemma3_window_pattern_zero": ("Gemma3TextConfig", dict(GEMMA, rope_parameters=GEMMA_DEFAULT_ROPE),
                                   lambda c: (c.pop("layer_types"), c.update(sliding_window_pattern=0)),
                                   "sliding_window_pattern: 0 is not a number of layers > 0"),
    "gemma3_soft_cap_zero": ("Gemma3TextConfig", dict(GEMMA, rope_parameters=GEMMA_DEFAULT_ROPE),
                             lambda c: c.update(final_logit_softcapping=0), "final_logit_softcapping: 0 is not a cap > 0"),
    "gemma3_soft_cap_negative": ("Gemma3TextConfig", dict(GEMMA, rope_parameters=GEMMA_DEFAULT_ROPE),
                                 lambda c: c.update(final_logit_softcapping=-5.0),
                                 "final_logit_softcapping: -5 is not a cap > 0"),
    "gemma3_query_scalar_zero": ("Gemma3TextConfig", dict(GEMMA, rope_parameters=GEMMA_DEFAULT_ROPE),
                                 lambda c: c.update(query_pre_attn_scalar=0), "query_pre_attn_scalar: 0 is not a number > 0"),
    "gemma3_kv_heads_null": ("Gemma3TextConfig", dict(GEMMA, rope_parameters=GEMMA_DEFAULT_ROPE),
                             lambda c: c.update(num_key_value_heads=None), "num_key_value_heads: null"),
    "llama_yarn_beta_negative": ("LlamaConfig", dict(COMMON), lambda c: c.update(rope_parameters={
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32, "rope_theta": 1e4, "beta_fast": -1}),
        "beta_fast -1 is not a number of rotations >= 0"),
    "llama_rope_theta_zero": ("LlamaConfig", dict(COMMON),
                              lambda c: c.update(rope_parameters={"rope_type": "default", "rope_theta": 0}),
                              "rope_theta 0 is not a number > 0"),
    "llama_no_positions": ("LlamaConfig", dict(COMMON), lambda c: c.update(max_position_embeddings=0),
                           "max_position_embeddings: 0 is not a number of positions > 0"),
    "llama_layers_beyond_any_model": ("LlamaConfig", dict(COMMON), lambda c: c.update(num_hidden_layers=10**13),
                                      "num_hidden_layers: 10000000000000 is larger than any model's"),
    "llama_layers_twenty_digits": ("LlamaConfig", dict(COMMON), lambda c: c.update(num_hidden_layers=10**20),
                                   "num_hidden_layers: out of range of a 64-bit integer: 100000000000000000000"),
    "gemma3_window_pattern_fractional": ("Gemma3TextConfig", dict(GEMMA, rope_parameters=GEMMA_DEFAULT_ROPE),
                                         lambda c: (c.pop("layer_types"), c.update(sliding_window_pattern=2.5)),
                                         "sliding_window_pattern: 2.5 is not a whole number of layers"),
    # A top-level rope_theta beside rope_scaling: named where it is (the message named rope_scaling).
    "llama_top_level_rope_theta_zero": ("LlamaConfig", dict(COMMON),
                                        lambda c: (c.pop("rope_parameters"),
                                                   c.update(rope_theta=0, rope_scaling={"rope_type": "linear",
                                                                                        "factor": 2.0})),
                                        "config.json: rope_theta 0 is not a number > 0"),
    "llama_hidden_size_real": ("LlamaConfig", dict(COMMON), lambda c: c.update(hidden_size=64.0),
                               "hidden_size: not an integer: 64.0"),
    "phi3_legacy_linear_rope": ("Phi3Config", dict(COMMON, pad_token_id=0),
                                lambda c: (c.pop("rope_parameters"), c.update(rope_theta=1e4, rope_scaling={
                                    "type": "linear", "factor": 2.0})),
                                "rope_scaling: rope type 'linear' is not one Phi-3 reads"),
    "gemma3_window_null": ("Gemma3TextConfig", dict(GEMMA, rope_parameters=GEMMA_DEFAULT_ROPE),
                           lambda c: c.update(sliding_window=None), "sliding_window: null: Gemma 3's sliding"),
    # A JSON string where a number or boolean belongs: transformers' strict config classes refuse
    # it (or fail in the forward, rope_theta); prge read the text as the number.
    "mistral_window_string": ("MistralConfig", dict(COMMON, sliding_window=8), lambda c: c.update(sliding_window="8"),
                              'sliding_window: the string "8" where a number is expected'),
    "llama_eps_string": ("LlamaConfig", dict(COMMON), lambda c: c.update(rms_norm_eps="1e-5"),
                         'rms_norm_eps: the string "1e-5" where a number is expected'),
    "llama_rope_theta_string": ("LlamaConfig", dict(COMMON),
                                lambda c: c.update(rope_parameters={"rope_type": "default", "rope_theta": "10000"}),
                                'rope_parameters: rope_theta: the string "10000" where a number is expected'),
    "llama_tie_string": ("LlamaConfig", dict(COMMON), lambda c: c.update(tie_word_embeddings="false"),
                         'tie_word_embeddings: the string "false" where a boolean is expected'),
    "phi3_partial_rotary_string": ("Phi3Config", dict(COMMON, pad_token_id=0),
                                   lambda c: c.update(partial_rotary_factor="0.5"),
                                   'partial_rotary_factor: the string "0.5" where a number is expected'),
    # A fractional position count: transformers computes llama3's wavelengths with 64.5; prge's
    # integer count would have cut it to 64.
    "llama3_fractional_original_max": ("LlamaConfig", dict(COMMON, rope_parameters={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64, "rope_theta": 1e4}),
        lambda c: c["rope_parameters"].update(original_max_position_embeddings=64.5),
        "original_max_position_embeddings: 64.5 is not a whole number of positions"),
    "phi3_longrope_factor_string": ("Phi3Config", dict(COMMON, pad_token_id=0, original_max_position_embeddings=64,
                                                       rope_parameters=LONGROPE),
                                    lambda c: c["rope_parameters"].update(short_factor=["1.0"] * 8),
                                    'rope_parameters: short_factor: entry 0: the string "1.0" where a number'),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_layouts_transformers_reads_otherwise_or_refuses_are_refused_by_name(tmp_path, case):
    kind, values, edit, words = REFUSED[case]
    model_dir = saved(tmp_path, transformers_config(kind, **values), edit)
    with pytest.raises(RuntimeError) as error:
        prge.CausalLM.from_pretrained(str(model_dir))
    assert words in str(error.value) and "config.json" in str(error.value), str(error.value)


def test_phi3_longrope_generation_recomputes_its_cache_where_transformers_does(tmp_path):
    """Phi3ForCausalLM drops the KV cache when the sequence first reaches
    original_max_position_embeddings + 1 and recomputes every key with LongRoPE's long factors."""
    from transformers import AutoModelForCausalLM

    config = transformers_config("Phi3Config", **dict(COMMON, pad_token_id=0, original_max_position_embeddings=64,
                                                      rope_parameters=LONGROPE))
    model_dir = saved(tmp_path, config)
    hf = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    prompt = torch.randint(1, V, (1, 56), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = hf.generate(prompt, max_new_tokens=20, do_sample=False, pad_token_id=0,
                               eos_token_id=None)[0, 56:].tolist()
    native = prge.CausalLM.from_pretrained(str(model_dir))
    assert native.generate([prompt[0].tolist()], max_new_tokens=20)[0] == expected


def test_a_key_given_twice_is_refused_by_name(tmp_path):
    """Python's json (transformers) takes a repeated key's last value, yaml-cpp's lookup its first:
    a config.json with one is refused, naming the key and the object it is in."""
    model_dir = saved(tmp_path, transformers_config("MistralConfig", **dict(COMMON, sliding_window=8)))
    path = model_dir / "config.json"
    text = path.read_text()
    path.write_text(text.replace('"sliding_window": 8', '"sliding_window": 16, "sliding_window": 8'))
    with pytest.raises(RuntimeError, match="config.json: key 'sliding_window' appears twice"):
        prge.CausalLM.from_pretrained(str(model_dir))
    path.write_text(text.replace('"rope_theta": 10000.0', '"rope_theta": 10000.0, "rope_theta": 500.0'))
    with pytest.raises(RuntimeError, match="key 'rope_theta' appears twice in rope_parameters"):
        prge.CausalLM.from_pretrained(str(model_dir))


def test_a_config_json_that_is_a_directory_is_named(tmp_path):
    (tmp_path / "config.json").mkdir()
    with pytest.raises(RuntimeError, match="config.json: is a directory, not a model config file"):
        prge.CausalLM.from_pretrained(str(tmp_path))


@pytest.mark.parametrize("saved_tied, outer, inner", [(True, None, False), (True, True, False), (False, False, True)])
def test_the_gemma3_wrapper_ties_by_its_own_key_as_transformers_does(tmp_path, saved_tied, outer, inner):
    """Gemma3ForConditionalGeneration ties lm_head by the wrapper's tie_word_embeddings (default
    true), not text_config's: a tied checkpoint whose text_config says false is tied, and a stored
    lm_head is used whatever text_config says."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=28,
                  patch_size=14)
    config = Gemma3Config(text_config=dict(GEMMA, rope_parameters=GEMMA_DEFAULT_ROPE, tie_word_embeddings=saved_tied),
                          vision_config=vision, tie_word_embeddings=saved_tied, mm_tokens_per_image=4,
                          image_token_index=V - 1, boi_token_index=V - 2, eoi_token_index=V - 3)
    torch.manual_seed(0)
    Gemma3ForConditionalGeneration(config).float().eval().save_pretrained(tmp_path / "model")
    path = tmp_path / "model" / "config.json"
    values = json.loads(path.read_text())
    values.pop("tie_word_embeddings") if outer is None else values.update(tie_word_embeddings=outer)
    values["text_config"]["tie_word_embeddings"] = inner
    path.write_text(json.dumps(values))
    hf = Gemma3ForConditionalGeneration.from_pretrained(str(tmp_path / "model"), dtype=torch.float32).eval()
    native = prge.CausalLM.from_pretrained(str(tmp_path / "model"))
    ids = torch.randint(0, V - 3, (1, 60), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(input_ids=ids).logits
    assert (native.logits(ids) - expected).abs().max().item() <= 1e-4 * expected.abs().max().item()


def test_a_gemma3_wrapper_untied_without_its_lm_head_is_refused(tmp_path):
    # transformers would start such a head from random values; prge names the missing weight.
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=28,
                  patch_size=14)
    config = Gemma3Config(text_config=dict(GEMMA, rope_parameters=GEMMA_DEFAULT_ROPE), vision_config=vision,
                          mm_tokens_per_image=4, image_token_index=V - 1, boi_token_index=V - 2, eoi_token_index=V - 3)
    torch.manual_seed(0)
    Gemma3ForConditionalGeneration(config).save_pretrained(tmp_path / "model")
    path = tmp_path / "model" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "tie_word_embeddings": False}))
    with pytest.raises(RuntimeError, match="lm_head.weight"):
        prge.CausalLM.from_pretrained(str(tmp_path / "model"))

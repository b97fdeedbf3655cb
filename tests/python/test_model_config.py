"""Every config.json field that changes a Llama's forward is implemented or refused by name.

RoPE variants are checked against transformers' own LlamaForCausalLM on the same weights, in
both layouts a config.json may use (transformers 5's `rope_parameters`, and the older
top-level `rope_theta` + `rope_scaling`), at a short length and at one beyond the lengths the
scaled variants start rescaling at; a wrong frequency shows up as a logit error that grows
with the position."""
import json

import pytest
import torch

import prge

MAX_POSITIONS = 256

# name -> rope_parameters (transformers 5 layout, without rope_theta)
ROPE_VARIANTS = {
    "default": {"rope_type": "default"},
    "linear": {"rope_type": "linear", "factor": 4.0},
    "dynamic": {"rope_type": "dynamic", "factor": 4.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
    "yarn_betas": {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 64,
                   "beta_fast": 16.0, "beta_slow": 2.0, "attention_factor": 1.2},
    "longrope": {"rope_type": "longrope", "original_max_position_embeddings": 64,
                 "short_factor": [1.0 + 0.1 * i for i in range(8)],
                 "long_factor": [1.0 + 0.7 * i for i in range(8)]},
}


def save_llama(tmp_path, rope_parameters: dict, seed: int = 0):
    """A tiny random Llama (head_dim 16) with the given RoPE, saved by transformers."""
    from transformers import LlamaConfig, LlamaForCausalLM

    # initializer_range 0.2: logits of order 10, so a wrong frequency costs whole units.
    config = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=MAX_POSITIONS,
                         initializer_range=0.2, rope_parameters={"rope_theta": 500.0, **rope_parameters})
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).float().eval()
    out = tmp_path / f"llama-{seed}"
    model.save_pretrained(out, safe_serialization=True)
    return out, model


def to_legacy_layout(model_dir):
    """config.json as transformers 4 wrote it: rope_theta at the top, rope_scaling with `type`."""
    path = model_dir / "config.json"
    config = json.loads(path.read_text())
    params = config.pop("rope_parameters")
    config["rope_theta"] = params.pop("rope_theta")
    kind = params.pop("rope_type")
    config["rope_scaling"] = None if kind == "default" else {"type": kind, **params}
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("layout", ["rope_parameters", "rope_scaling"])
@pytest.mark.parametrize("variant", sorted(ROPE_VARIANTS))
def test_rope_variants_match_transformers(tmp_path, variant, layout):
    model_dir, hf = save_llama(tmp_path, ROPE_VARIANTS[variant])
    if layout == "rope_scaling":
        to_legacy_layout(model_dir)
    native = prge.CausalLM.from_pretrained(str(model_dir))
    assert native.spec.rope.type == ROPE_VARIANTS[variant]["rope_type"]
    g = torch.Generator().manual_seed(1)
    # 40: shorter than every rescaling threshold; 300: beyond max_position_embeddings (dynamic)
    # and original_max_position_embeddings (longrope).
    for length in (40, 300):
        ids = torch.randint(0, 97, (2, length), generator=g)
        with torch.no_grad():
            expected = hf(ids).logits
        got = native.logits(ids)
        scale = expected.abs().max().item()
        assert (got - expected).abs().max().item() <= 1e-4 * max(scale, 1.0), (variant, length)


@pytest.mark.parametrize("variant", ["llama3", "dynamic", "longrope"])
def test_greedy_generation_matches_transformers_with_scaled_rope(tmp_path, variant):
    """The KV-cache decoder computes RoPE per call at the call's own positions."""
    model_dir, hf = save_llama(tmp_path, ROPE_VARIANTS[variant])
    native = prge.CausalLM.from_pretrained(str(model_dir))
    prompt = torch.randint(1, 97, (1, 250), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = hf.generate(prompt, max_new_tokens=20, do_sample=False, pad_token_id=0)[0, 250:].tolist()
    assert native.generate([prompt[0].tolist()], max_new_tokens=20)[0] == expected


def edit_config(model_dir, **changes):
    path = model_dir / "config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is DELETE:
            config.pop(key, None)
        else:
            config[key] = value
    path.write_text(json.dumps(config))


DELETE = object()

# Each row: config.json changes -> the words the refusal must contain (the field's name).
REFUSED = [
    ({"rope_parameters": {"rope_type": "proportional", "rope_theta": 1e4}}, "rope type 'proportional'"),
    ({"rope_parameters": {"rope_type": "su", "rope_theta": 1e4}}, "rope type 'su'"),
    ({"rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 3, 3]}},
     "field 'mrope_section'"),
    ({"rope_parameters": {"rope_type": "llama3", "factor": 8.0, "rope_theta": 1e4}}, "needs 'low_freq_factor'"),
    ({"rope_parameters": {"rope_type": "linear", "rope_theta": 1e4}}, "needs 'factor'"),
    ({"partial_rotary_factor": 0.5}, "partial_rotary_factor"),
    ({"rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.75}},
     "partial_rotary_factor"),
    ({"hidden_act": "gelu"}, "hidden_act: activation 'gelu' is not supported"),
    ({"quantization_config": {"quant_method": "bitsandbytes"}}, "quantization_config"),
    ({"sliding_window": 32}, "key 'sliding_window'"),
    ({"attn_logit_softcapping": 50.0}, "key 'attn_logit_softcapping'"),
    ({"some_future_field": 1}, "key 'some_future_field'"),
    ({"model_type": "mamba"}, "model_type 'mamba' is not supported"),
    # A value of config.json is shown escaped, a long one by its start and length (io::shown_value).
    ({"model_type": "\x1b[31m" + "m" * 200}, "model_type '\\x1b[31m" + "m" * 75 + "...' (205 bytes) is not supported"),
    ({"hidden_act": "\x1b[31mred"}, "activation '\\x1b[31mred' is not supported"),
    ({"rope_parameters": {"rope_type": "\x1b[31m" + "y" * 200, "rope_theta": 1e4}},
     "rope type '\\x1b[31m" + "y" * 75 + "...' (205 bytes) is not supported"),
    ({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4, "\x1b[31mzz": 1}},
     "field '\\x1b[31mzz' is not supported"),
    ({"model_type": DELETE}, "model_type: missing"),
    ({"rms_norm_eps": -1.0}, "rms_norm_eps: -1 is not a finite number > 0"),
    ({"rope_interleaved": True}, "rope_interleaved: true"),
    ({"head_dim": 10**12}, "head_dim: 1000000000000 is larger than any model's"),
    ({"rms_norm_eps": 0}, "rms_norm_eps: 0 is not a finite number > 0"),
    ({"rms_norm_eps": None}, "rms_norm_eps: null: transformers refuses it"),
    ({"tie_word_embeddings": None}, "tie_word_embeddings: null: transformers 4 reads it as untied and transformers 5 "
                                    "refuses it"),
]


@pytest.mark.parametrize("changes,words", REFUSED, ids=[w for _, w in REFUSED])
def test_fields_that_change_the_forward_are_refused_by_name(tmp_path, changes, words):
    model_dir, _ = save_llama(tmp_path, {"rope_type": "default"})
    edit_config(model_dir, **changes)
    with pytest.raises(RuntimeError) as error:
        prge.CausalLM.from_pretrained(str(model_dir))
    assert words in str(error.value) and "config.json" in str(error.value)


# Fields read and accepted: the logits stay transformers'.
ACCEPTED = [
    {"rope_parameters": {"rope_type": "default", "rope_theta": 500.0}},  # default is plain RoPE
    {"rope_scaling": None, "rope_theta": 500.0, "rope_parameters": DELETE},
    {"pretraining_tp": 2, "attention_dropout": 0.1, "use_cache": False, "initializer_range": 0.5,
     "torch_dtype": "bfloat16", "architectures": ["LlamaForCausalLM"], "num_beams": 4, "temperature": 0.7},
    {"hidden_act": "swish"},  # the same function as silu
    {"partial_rotary_factor": 1.0, "attention_bias": False, "mlp_bias": False},
    # Code shipped with the model runs in transformers only with trust_remote_code=True; the
    # attention implementation it chose gives the same result.
    {"auto_map": {"AutoModelForCausalLM": "modeling.Model"}, "_attn_implementation_autoset": True},
    # SmolLM2's released config.json (written by nanotron, read by transformers.js)
    {"is_llama_config": True, "rope_interleaved": False, "transformers.js_config": {"kv_cache_dtype": {"q4f16": "float16"}}},
]


@pytest.mark.parametrize("changes", ACCEPTED, ids=range(len(ACCEPTED)))
def test_fields_without_effect_are_accepted(tmp_path, changes):
    model_dir, hf = save_llama(tmp_path, {"rope_type": "default"})
    edit_config(model_dir, **changes)
    ids = torch.randint(0, 97, (2, 30), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = hf(ids).logits
    torch.testing.assert_close(prge.CausalLM.from_pretrained(str(model_dir)).logits(ids), expected,
                               rtol=1e-4, atol=1e-4)


def test_modeling_code_shipped_with_the_model_is_noted_by_check_and_train(tmp_path, capsys):
    """config.json's auto_map names code prge does not run: `prge check` notes it, as loading
    for training does (prge runs its native model_type, as transformers without
    trust_remote_code=True)."""
    from prge.cli import main
    from prge.setup import setup_model

    model_dir, _ = save_llama(tmp_path, {"rope_type": "default"})
    config = tmp_path / "c.yaml"
    config.write_text(f"model: {{name: {model_dir}}}\n")
    assert main(["check", str(config)]) == 0 and "auto_map" not in capsys.readouterr().err
    edit_config(model_dir, auto_map={"AutoModelForCausalLM": "modeling.Model"})
    assert main(["check", str(config)]) == 0
    note = "auto_map names modeling code shipped with the model; prge runs its native llama"
    assert note in capsys.readouterr().err
    setup_model(prge.parse_run_config(config.read_text()), model_dir=model_dir)
    assert note in capsys.readouterr().err


def test_a_config_value_transformers_refuses_is_named_in_config_json_not_the_tokenizer(tmp_path):
    """AutoTokenizer reads config.json to pick the tokenizer class: a value transformers' config
    class refuses (transformers 5: an integer rms_norm_eps) is named in config.json, not blamed
    on the tokenizer files."""
    import transformers
    from conftest import make_tiny_assets
    from prge.data.tokens import load_tokenizer

    model_dir, _ = make_tiny_assets(tmp_path)
    edit_config(model_dir, rms_norm_eps=1)
    try:
        transformers.AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
    except Exception:
        with pytest.raises(ValueError, match=rf"^{model_dir / 'config.json'}: transformers cannot read it \(its "
                                             r"tokenizer is picked through it\): .*rms_norm_eps"):
            load_tokenizer(model_dir)
    else:  # a transformers that takes it: so does the tokenizer
        assert load_tokenizer(model_dir) is not None


def test_a_weight_file_that_cannot_be_read_is_named_by_check_and_train(tmp_path, capsys, monkeypatch):
    """A model.safetensors without read permission (simulated: these tests may run as root) is
    named at model.name's place by `prge check` (which read no weights and said OK before) and
    by `prge train`, in the same words."""
    import re

    import prge.preflight
    from prge.cli import main

    model_dir, _ = save_llama(tmp_path, {"rope_type": "default"})
    config = tmp_path / "c.yaml"
    config.write_text(f"model: {{name: {model_dir}}}\nrun: {{output_dir: {tmp_path / 'run'}}}\n")

    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(prge.preflight, "open", denied, raising=False)
    for command in (["check", str(config)], ["train", str(config), "--no-progress"]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert re.fullmatch(rf"prge: error: \S*c\.yaml:1:15: model\.name: {re.escape(str(model_dir))}/"
                            r"model\.safetensors: cannot be read \(Permission denied\)", err), err

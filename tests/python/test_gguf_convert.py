"""The GGUF converter recovers what llama.cpp's converter wrote: head size, linear / YaRN
scaling metadata and Llama 3's rope_freqs, so a converted model computes the logits of the
Hugging Face model the GGUF was made from (transformers' own GGUF loader drops all RoPE
scaling, so the reference is the original model)."""
import json

import pytest
import torch

import prge
from gguf_fixtures import write_gguf, write_llama_gguf
from installed import installed_module

installed_module("gguf", "pip install gguf")

ROPES = {
    "default": {"rope_type": "default"},
    "linear": {"rope_type": "linear", "factor": 2.0},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
    "llama3_canonical": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192},
    "llama3_short": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 64},
}
TOKENS = ["a", "b", "ab"] + [f"t{i}" for i in range(94)]


def hf_llama(rope: dict, head_dim: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(TOKENS), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=head_dim,
                         max_position_embeddings=256, initializer_range=0.2,
                         rope_parameters={"rope_theta": 5000.0, **rope})
    torch.manual_seed(0)
    return LlamaForCausalLM(config).float().eval()


@pytest.mark.parametrize("head_dim", [16, 24])
@pytest.mark.parametrize("rope", sorted(ROPES))
def test_converted_gguf_computes_the_source_models_logits(tmp_path, rope, head_dim):
    from prge.models.gguf_convert import convert_gguf

    hf = hf_llama(ROPES[rope], head_dim)
    hf.save_pretrained(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    write_llama_gguf(tmp_path / "m.gguf", config, hf.state_dict(), tokens=TOKENS)
    out = convert_gguf(tmp_path / "m.gguf", tmp_path / "converted")
    converted = json.loads((out / "config.json").read_text())
    assert converted["head_dim"] == head_dim
    assert converted["rope_parameters"]["rope_type"] == ROPES[rope]["rope_type"]
    native = prge.CausalLM.from_pretrained(str(out))
    ids = torch.randint(0, len(TOKENS), (2, 200), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(ids).logits
    torch.testing.assert_close(native.logits(ids), expected, rtol=1e-4, atol=1e-4)


def test_partial_rotation_and_unknown_scaling_are_refused(tmp_path):
    import gguf
    from prge.models.gguf_convert import convert_gguf

    hf = hf_llama(ROPES["default"], 16)
    hf.save_pretrained(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    write_llama_gguf(tmp_path / "m.gguf", config, hf.state_dict(), tokens=TOKENS)
    reader = gguf.GGUFReader(str(tmp_path / "m.gguf"))

    def rewrite(name, **metadata):
        """A copy of the GGUF with some metadata replaced."""
        w = gguf.GGUFWriter(str(tmp_path / name), "llama")
        for key, field in reader.fields.items():
            if key.startswith("GGUF.") or key == "general.architecture" or key in metadata:
                continue
            w.add_key_value(key, field.contents(), field.types[0],
                            field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None)
        for key, (value, kind) in metadata.items():
            w.add_key_value(key, value, kind)
        for t in reader.tensors:
            w.add_tensor(t.name, t.data)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return tmp_path / name

    partial = rewrite("partial.gguf", **{"llama.rope.dimension_count": (8, gguf.GGUFValueType.UINT32)})
    with pytest.raises(ValueError, match="dimension_count 8 < head size 16"):
        convert_gguf(partial, tmp_path / "a")
    odd = rewrite("odd.gguf", **{"llama.rope.scaling.type": ("longrope", gguf.GGUFValueType.STRING),
                                 "llama.rope.scaling.factor": (2.0, gguf.GGUFValueType.FLOAT32)})
    with pytest.raises(ValueError, match="scaling.type 'longrope' is not supported"):
        convert_gguf(odd, tmp_path / "b")


def family_source(kind: str):
    import transformers as t

    common = dict(vocab_size=len(TOKENS), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, initializer_range=0.2)
    if kind == "qwen2":
        return "qwen2", t.Qwen2ForCausalLM(t.Qwen2Config(**common))
    if kind == "qwen3":
        return "qwen3", t.Qwen3ForCausalLM(t.Qwen3Config(**common, head_dim=24))
    if kind == "llama_biases":
        return "llama", t.LlamaForCausalLM(t.LlamaConfig(**common, attention_bias=True))
    config = t.Gemma3TextConfig(**{**common, "num_hidden_layers": 6}, head_dim=16, query_pre_attn_scalar=16,
                                sliding_window=32)
    return "gemma3", t.Gemma3ForCausalLM(config)


@pytest.mark.parametrize("kind", ["qwen2", "qwen3", "gemma3", "llama_biases"])
def test_gguf_of_other_families_converts_to_the_source_models_logits(tmp_path, kind):
    """transformers' GGUF loader is the reference where it keeps everything (qwen2, gemma3 with
    its default pattern and scale); the source model is, for every case."""
    from prge.models.gguf_convert import convert_gguf

    arch, hf = family_source(kind)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            p.normal_(0, 0.2) if "norm" not in name else p.add_(0.2 * torch.randn_like(p))
    hf = hf.float().eval()
    hf.save_pretrained(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    write_gguf(tmp_path / "m.gguf", arch, config, hf.state_dict(), tokens=TOKENS)
    out = convert_gguf(tmp_path / "m.gguf", tmp_path / "converted")
    native = prge.CausalLM.from_pretrained(str(out))
    assert native.spec.model_type == hf.config.model_type
    ids = torch.randint(0, len(TOKENS), (2, 100), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(ids).logits
    torch.testing.assert_close(native.logits(ids), expected, rtol=1e-4, atol=1e-4)


def test_a_damaged_gguf_is_named_and_leaves_no_conversion_behind(tmp_path, monkeypatch):
    """A GGUF whose weights hold NaN, or that lacks the tensors its metadata promises, fails to
    convert with an error naming the file; nothing is left in the cache to be used or redone."""
    from prge.models import gguf_model

    monkeypatch.setenv("PRGE_CACHE", str(tmp_path / "cache"))
    hf = hf_llama(ROPES["default"], 16)
    hf.save_pretrained(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    state = {k: v.clone() for k, v in hf.state_dict().items()}
    state["model.layers.1.mlp.down_proj.weight"][3, 5] = float("nan")
    write_llama_gguf(tmp_path / "nan.gguf", config, state, tokens=TOKENS)
    with pytest.raises(ValueError, match=r"nan\.gguf: tensor blk\.1\.ffn_down\.weight holds NaN or infinite values"):
        gguf_model(tmp_path / "nan.gguf")
    state = {k: v for k, v in hf.state_dict().items() if k != "model.layers.0.self_attn.o_proj.weight"}
    write_llama_gguf(tmp_path / "short.gguf", config, state, tokens=TOKENS)
    with pytest.raises(ValueError, match=r"short\.gguf: "):
        gguf_model(tmp_path / "short.gguf")
    assert not any((tmp_path / "cache" / "models").iterdir())

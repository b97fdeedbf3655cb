"""Convert a llama.cpp GGUF checkpoint (Llama architecture) to a Hugging Face style
directory: config.json, model.safetensors (float32) and tokenizer.json.

Quantised tensors are dequantised with the `gguf` package; llama.cpp stores the Q and K
projections with rows permuted for its rotary layout, which is undone here.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def _field(reader, key, default=None):
    field = reader.fields.get(key)
    if field is None:
        if default is None:
            raise ValueError(f"GGUF file lacks metadata key '{key}'")
        return default
    value = field.contents()
    return value


def unpermute_rotary_rows(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Inverse of llama.cpp's convert `permute(w, n_head)` on Q/K rows."""
    out_features = weight.shape[0]
    half = out_features // n_heads // 2
    return (weight.reshape(n_heads, half, 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def convert_gguf(gguf_path: str | Path, out_dir: str | Path) -> Path:
    import gguf
    from safetensors.numpy import save_file

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf_path}")
    reader = gguf.GGUFReader(str(gguf_path))
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"{gguf_path}: architecture '{arch}' is not supported (only llama)")
    n_heads = int(_field(reader, "llama.attention.head_count"))
    n_kv = int(_field(reader, "llama.attention.head_count_kv", n_heads))
    hidden = int(_field(reader, "llama.embedding_length"))
    head_dim = int(_field(reader, "llama.attention.key_length", hidden // n_heads))
    rotary = int(_field(reader, "llama.rope.dimension_count", head_dim))
    if rotary != head_dim:
        raise ValueError(f"{gguf_path}: llama.rope.dimension_count {rotary} < head size {head_dim} (partial "
                         "rotary embeddings) is not supported")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    tensors: dict[str, np.ndarray] = {}
    rope_freqs = None
    for t in reader.tensors:
        data = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        data = data.reshape([int(d) for d in reversed(t.shape)])
        parts = t.name.split(".")
        if t.name == "token_embd.weight":
            name = "model.embed_tokens.weight"
        elif t.name == "output_norm.weight":
            name = "model.norm.weight"
        elif t.name == "output.weight":
            name = "lm_head.weight"
        elif t.name == "rope_freqs.weight":
            rope_freqs = data.astype(np.float64)
            continue
        elif parts[0] == "blk" and parts[2] in _LAYER_NAMES:
            name = f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}.weight"
            if parts[2] == "attn_q":
                data = unpermute_rotary_rows(data, n_heads)
            elif parts[2] == "attn_k":
                data = unpermute_rotary_rows(data, n_kv)
        else:
            raise ValueError(f"{gguf_path}: tensor '{t.name}' has no place in a Llama model")
        tensors[name] = np.ascontiguousarray(data)
    context = int(_field(reader, "llama.context_length"))
    theta = float(_field(reader, "llama.rope.freq_base", 10000.0))
    rope = _rope_parameters(reader, gguf_path, theta, head_dim, rope_freqs)
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": len(tokens),
        "hidden_size": hidden,
        "intermediate_size": int(_field(reader, "llama.feed_forward_length")),
        "num_hidden_layers": int(_field(reader, "llama.block_count")),
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv,
        "head_dim": head_dim,
        "rms_norm_eps": float(_field(reader, "llama.attention.layer_norm_rms_epsilon")),
        "rope_parameters": rope,
        "max_position_embeddings": context,
        "tie_word_embeddings": "lm_head.weight" not in tensors,
        "hidden_act": "silu",
        "bos_token_id": int(_field(reader, "tokenizer.ggml.bos_token_id", 1)),
        "eos_token_id": int(_field(reader, "tokenizer.ggml.eos_token_id", 2)),
        "torch_dtype": "float32",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "model.safetensors.tmp"
    save_file(tensors, str(tmp))
    tmp.replace(out_dir / "model.safetensors")
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    _export_tokenizer(gguf_path, out_dir)
    return out_dir


def _rope_parameters(reader, gguf_path: Path, theta: float, head_dim: int, rope_freqs) -> dict:
    """config.json's rope_parameters from the GGUF's RoPE metadata. llama.cpp writes linear and
    YaRN scaling as rope.scaling.* keys, and Llama 3's scaling as a tensor of per-frequency
    divisors, rope_freqs (inv_freq[i] = theta^(-2i/d) / rope_freqs[i]), recovered here as the
    llama3 parameters that reproduce it."""
    kind = _field(reader, "llama.rope.scaling.type", "none")
    if rope_freqs is not None:
        if kind not in ("none", ""):
            raise ValueError(f"{gguf_path}: both rope_freqs and rope.scaling.type '{kind}': not supported")
        return {"rope_theta": theta, **llama3_from_rope_freqs(rope_freqs, theta, head_dim, gguf_path)}
    if kind in ("none", ""):
        return {"rope_type": "default", "rope_theta": theta}
    factor = float(_field(reader, "llama.rope.scaling.factor"))
    if kind == "linear":
        return {"rope_type": "linear", "rope_theta": theta, "factor": factor}
    if kind == "yarn":
        extra = [k for k in reader.fields if k.startswith("llama.rope.scaling.yarn")]
        if extra:
            raise ValueError(f"{gguf_path}: YaRN metadata {', '.join(extra)} is not supported")
        original = int(_field(reader, "llama.rope.scaling.original_context_length"))
        return {"rope_type": "yarn", "rope_theta": theta, "factor": factor,
                "original_max_position_embeddings": original}
    raise ValueError(f"{gguf_path}: llama.rope.scaling.type '{kind}' is not supported (none, linear, yarn, "
                     "or Llama 3's rope_freqs)")


def llama3_rope_freqs(theta: float, head_dim: int, factor: float, low: float, high: float,
                      original: float) -> np.ndarray:
    """llama.cpp's rope_freqs for Llama 3 RoPE parameters: 1, `factor`, or the blend between."""
    wavelength = 2 * np.pi * theta ** (np.arange(0, head_dim, 2) / head_dim)
    smooth = (original / wavelength - low) / (high - low)
    blended = 1.0 / ((1.0 - smooth) / factor + smooth)
    return np.where(wavelength < original / high, 1.0, np.where(wavelength > original / low, factor, blended))


def llama3_from_rope_freqs(rope_freqs: np.ndarray, theta: float, head_dim: int, gguf_path) -> dict:
    """The llama3 rope_parameters whose frequencies are rope_freqs'. Only the ratios of
    original_max_position_embeddings to the two frequency factors matter, so low_freq_factor is
    fixed at Llama 3's 1 and the rest solved from the blended entries; Llama 3's own values
    (high 4, 8192 positions) are tried first."""
    if rope_freqs.shape != (head_dim // 2,):
        raise ValueError(f"{gguf_path}: rope_freqs has shape {rope_freqs.shape}, expected ({head_dim // 2},)")
    factor = float(rope_freqs.max())
    if np.allclose(rope_freqs, 1.0, rtol=1e-6):
        return {"rope_type": "default"}
    candidates = [(1.0, 4.0, 8192)]
    blended = (rope_freqs > 1 + 1e-6) & (rope_freqs < factor * (1 - 1e-6))
    if blended.sum() >= 2:
        wavelength = 2 * np.pi * theta ** (np.arange(0, head_dim, 2) / head_dim)
        smooth = (1 / rope_freqs[blended] - 1 / factor) / (1 - 1 / factor)  # = a / wavelength - b
        a, b = np.polyfit(1 / wavelength[blended], smooth, 1) * np.array([1.0, -1.0])
        if b > 0:
            candidates.append((1.0, 1.0 + 1.0 / b, int(round(a / b))))
    for low, high, original in candidates:
        if np.allclose(llama3_rope_freqs(theta, head_dim, factor, low, high, original), rope_freqs, rtol=1e-5):
            return {"rope_type": "llama3", "factor": factor, "low_freq_factor": low, "high_freq_factor": float(high),
                    "original_max_position_embeddings": original}
    raise ValueError(f"{gguf_path}: rope_freqs does not follow Llama 3's RoPE scaling; prge cannot express it")


def _export_tokenizer(gguf_path: Path, out_dir: Path) -> None:
    # transformers builds a fast tokenizer from the GGUF vocabulary and merges.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    tokenizer.save_pretrained(str(out_dir))

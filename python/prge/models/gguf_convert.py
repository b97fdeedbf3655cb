"""Convert a llama.cpp GGUF checkpoint to a Hugging Face style directory: config.json,
model.safetensors (float32) and the tokenizer files.

Architectures: llama (also Mistral GGUFs, which llama.cpp writes as llama), qwen2, qwen3 and
gemma3. The config is rebuilt from the GGUF metadata, including what transformers' own GGUF
loader drops (RoPE scaling and Llama 3's rope_freqs, head sizes, Gemma's sliding window, its
local RoPE base and its attention scale); the tensor names come from the `gguf` package's
per-architecture tables, mapped onto the checkpoint names prge's family registry reads
(prge.ArchSpec.layer_weight_names), so the converted directory loads through the same reader
as any Hugging Face checkpoint. Quantised tensors are dequantised with `gguf`; llama.cpp stores
a llama-architecture Q and K with rows permuted for its interleaved RoPE, which is undone here,
and Gemma's norm weights as 1 + w, from which 1 is subtracted.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from prge import durable
from prge.models.gguf_blocks import repack
from prge.whitespace import shown_name, shown_names, shown_value

# Written last into a converted directory: a conversion by another version is redone.
MARKER = "prge_conversion.json"
CONVERTER_VERSION = 3  # 3: projection weights also kept quantized, beside the float32 checkpoint

# GGUF general.architecture -> Hugging Face model_type.
ARCHITECTURES = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma3": "gemma3_text"}


def _field(reader, key, default=None):
    field = reader.fields.get(key)
    if field is None:
        if default is None:
            raise ValueError(f"GGUF file lacks metadata key '{key}'")
        return default
    return field.contents()


def unpermute_rotary_rows(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Inverse of llama.cpp's convert `permute(w, n_head)` on Q/K rows (and biases)."""
    out_features = weight.shape[0]
    half = out_features // n_heads // 2
    return (weight.reshape(n_heads, half, 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def _config(reader, gguf_path: Path, arch: str, shapes: dict, rope_freqs) -> dict:
    """config.json (transformers 5 layout) from the GGUF metadata; shapes: tensor name -> shape."""
    f = lambda key, default=None: _field(reader, f"{arch}.{key}", default)  # noqa: E731
    heads = int(f("attention.head_count"))
    hidden = int(f("embedding_length"))
    head_dim = int(f("attention.key_length", hidden // heads))
    if int(f("attention.value_length", head_dim)) != head_dim:
        raise ValueError(f"{gguf_path}: key and value head sizes differ; not supported")
    rotary = int(f("rope.dimension_count", head_dim))
    if rotary != head_dim:
        raise ValueError(f"{gguf_path}: {arch}.rope.dimension_count {rotary} < head size {head_dim} (partial "
                         "rotary embeddings) is not supported")
    layers = int(f("block_count"))
    theta = float(f("rope.freq_base", 10000.0))
    config = {
        "model_type": ARCHITECTURES[arch],
        "vocab_size": int(shapes["token_embd.weight"][0]),
        "hidden_size": hidden,
        "intermediate_size": int(f("feed_forward_length")),
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": int(f("attention.head_count_kv", heads)),
        "head_dim": head_dim,
        "rms_norm_eps": float(f("attention.layer_norm_rms_epsilon")),
        "max_position_embeddings": int(f("context_length")),
        "tie_word_embeddings": "output.weight" not in shapes,
        "bos_token_id": int(_field(reader, "tokenizer.ggml.bos_token_id", 1)),
        "eos_token_id": int(_field(reader, "tokenizer.ggml.eos_token_id", 2)),
        "torch_dtype": "float32",
    }
    if arch == "gemma3":
        # llama.cpp writes neither the attention scale nor the layer pattern: it uses Gemma 3's
        # (1 / sqrt(hidden / heads) for the 62-layer 27B, else 1 / sqrt(head_dim); every 6th
        # layer global), and so does this.
        config.update({
            "query_pre_attn_scalar": hidden // heads if layers == 62 else head_dim,
            "sliding_window": int(f("attention.sliding_window", 4096)),
            "sliding_window_pattern": 6,
            "rope_parameters": {
                "full_attention": {"rope_theta": theta, **_rope_scaling(reader, gguf_path, arch, head_dim, None)},
                "sliding_attention": {"rope_type": "default", "rope_theta": float(f("rope.freq_base_swa", 10000.0))},
            },
        })
        if reader.fields.get(f"{arch}.final_logit_softcapping") is not None:
            config["final_logit_softcapping"] = float(f("final_logit_softcapping"))
        return config
    config["hidden_act"] = "silu"
    config["rope_parameters"] = {"rope_theta": theta, **_rope_scaling(reader, gguf_path, arch, head_dim, rope_freqs)}
    if arch == "qwen3":
        config["attention_bias"] = "blk.0.attn_output.bias" in shapes
    elif arch == "llama":
        config["attention_bias"] = "blk.0.attn_q.bias" in shapes
    return config


def _rope_scaling(reader, gguf_path: Path, arch: str, head_dim: int, rope_freqs) -> dict:
    """rope_type and its parameters from the GGUF. llama.cpp writes linear and YaRN scaling as
    rope.scaling.* keys, and Llama 3's scaling as a tensor of per-frequency divisors,
    rope_freqs (inv_freq[i] = theta^(-2i/d) / rope_freqs[i]), recovered here as the llama3
    parameters that reproduce it."""
    kind = _field(reader, f"{arch}.rope.scaling.type", "none")
    theta = float(_field(reader, f"{arch}.rope.freq_base", 10000.0))
    if rope_freqs is not None:
        if kind not in ("none", ""):
            raise ValueError(f"{gguf_path}: both rope_freqs and rope.scaling.type {shown_value(kind)}: not supported")
        return llama3_from_rope_freqs(np.asarray(rope_freqs, dtype=np.float64), theta, head_dim, gguf_path)
    if kind in ("none", ""):
        return {"rope_type": "default"}
    factor = float(_field(reader, f"{arch}.rope.scaling.factor"))
    if kind == "linear":
        return {"rope_type": "linear", "factor": factor}
    if kind == "yarn":
        extra = [k for k in reader.fields if k.startswith(f"{arch}.rope.scaling.yarn")]
        if extra:
            raise ValueError(f"{gguf_path}: YaRN metadata {shown_names(extra)} is not supported")
        original = int(_field(reader, f"{arch}.rope.scaling.original_context_length"))
        return {"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": original}
    raise ValueError(f"{gguf_path}: {shown_name(arch)}.rope.scaling.type {shown_value(kind)} is not supported (none, "
                     "linear, yarn, "
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


def read_gguf(gguf_path: Path):
    """(gguf.GGUFReader, architecture) of a GGUF file: its metadata and tensor directory read (the
    weights stay mapped, unread). Raises FileNotFoundError, or ValueError naming the file when it
    is cut short or damaged or holds an architecture the converter does not know."""
    import gguf

    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf_path}")
    try:
        with warnings.catch_warnings():  # an offset or size that overflows numpy is a damaged file, not a warning
            warnings.simplefilter("error", RuntimeWarning)
            reader = gguf.GGUFReader(str(gguf_path))
        arch = _field(reader, "general.architecture")
    except (ValueError, IndexError, KeyError, TypeError, RuntimeWarning) as e:  # a cut or damaged file
        raise ValueError(f"{gguf_path}: not a readable GGUF file ({type(e).__name__}: {e})") from None
    if arch not in ARCHITECTURES:
        raise ValueError(f"{gguf_path}: architecture {shown_value(arch)} is not supported ({', '.join(ARCHITECTURES)})")
    return reader, arch


def convert_gguf(gguf_path: str | Path, out_dir: str | Path, keep_quantized: bool = True) -> Path:
    """Write config.json, model.safetensors and tokenizer files for `gguf_path` into `out_dir`.
    model.safetensors holds every weight in float32 (what transformers and peft load); with
    keep_quantized, projection weights stored as Q8_0 / Q4_0 / Q4_1 / Q5_0 / Q4_K / Q6_K are also
    kept quantized beside it (prge.QUANTIZED_WEIGHTS_FILE: repacked exactly by
    prge.models.gguf_blocks, as NAME.qweight / .scales / .offsets / .format), which prge loads
    instead of their float32 copies. Raises ValueError naming the file and the metadata or tensor
    it cannot express."""
    import gguf
    from safetensors.numpy import save_file

    from prge._core import QUANTIZED_WEIGHTS_FILE, ArchSpec

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    reader, arch = read_gguf(gguf_path)
    stored = {t.name: t for t in reader.tensors}

    def dense(name: str) -> np.ndarray:
        t = stored[name]
        data = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        return data.reshape([int(d) for d in reversed(t.shape)])

    shapes = {name: tuple(int(d) for d in reversed(t.shape)) for name, t in stored.items()}
    rope_freqs = dense("rope_freqs.weight") if "rope_freqs.weight" in stored else None
    config = _config(reader, gguf_path, arch, shapes, rope_freqs)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    spec = ArchSpec.from_json_file(str(out_dir / "config.json"))  # prge's reader decides the names

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], spec.num_hidden_layers)
    wanted = {"model.embed_tokens.weight", "model.norm.weight"}
    if not spec.tie_word_embeddings:
        wanted.add("lm_head.weight")
    wanted |= {f"model.layers.{i}.{n}" for i in range(spec.num_hidden_layers) for n in spec.layer_weight_names}
    tensors: dict[str, np.ndarray] = {}  # dense float32: what transformers loads
    quantized: dict[str, np.ndarray] = {}  # what prge loads instead, beside it
    used = {"rope_freqs.weight"}
    for hf in sorted(wanted):
        base, suffix = hf.rsplit(".", 1)
        source = names.get_name(base)
        if source is None or f"{source}.{suffix}" not in stored:
            raise ValueError(f"{gguf_path}: no tensor for {hf} (expected {source}.{suffix})")
        source = f"{source}.{suffix}"
        used.add(source)
        heads = None
        if arch == "llama" and (".attn_q." in source or ".attn_k." in source):
            heads = spec.num_attention_heads if ".attn_q." in source else spec.num_key_value_heads
        t = stored[source]
        packed = None
        if keep_quantized and hf.endswith("proj.weight") and len(t.shape) == 2:
            rows, cols = (int(d) for d in reversed(t.shape))
            packed = repack(t.tensor_type.name, np.asarray(t.data), rows, cols)
        if packed is not None:
            bits, group, qweight, scales, offsets = packed
            parts = {"qweight": qweight, "scales": scales, "offsets": offsets}
            for key, value in parts.items():
                if value is None:
                    continue
                if heads is not None:  # the row permutation moves whole rows: codes and scales alike
                    value = unpermute_rotary_rows(value, heads)
                quantized[f"{hf}.{key}"] = np.ascontiguousarray(value)
            quantized[f"{hf}.format"] = np.array([bits, group], dtype=np.int64)
        data = dense(source)
        if not np.isfinite(data).all():
            raise ValueError(f"{gguf_path}: tensor {source} holds NaN or infinite values (a damaged file?)")
        if heads is not None:
            data = unpermute_rotary_rows(data, heads)
        if arch == "gemma3" and hf.endswith("norm.weight"):
            data = data - 1.0  # llama.cpp stores Gemma's gain 1 + w
        tensors[hf] = np.ascontiguousarray(data)
    unused = sorted(set(stored) - used)
    if unused:
        raise ValueError(f"{gguf_path}: tensors {', '.join(unused[:5])} have no place in a {arch} model")
    for name, content in (("model.safetensors", tensors), (QUANTIZED_WEIGHTS_FILE, quantized)):
        if content:
            tmp = out_dir / f"{name}.tmp"
            save_file(content, str(tmp))
            durable.usual_mode(tmp)
            tmp.replace(out_dir / name)
    _export_tokenizer(gguf_path, out_dir)
    (out_dir / MARKER).write_text(json.dumps({"converter": CONVERTER_VERSION, "source": str(gguf_path),
                                              "keep_quantized": keep_quantized}))
    return out_dir


def _export_tokenizer(gguf_path: Path, out_dir: Path) -> None:
    # transformers builds a fast tokenizer from the GGUF vocabulary and merges.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    tokenizer.save_pretrained(str(out_dir))

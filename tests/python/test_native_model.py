"""The native C++ Llama must compute the same function as transformers' LlamaForCausalLM
on the same weights; a wrong RoPE, GQA grouping or norm would show up here."""
import pytest
import torch

import prge
from conftest import make_hf_llama


@pytest.mark.parametrize("tie", [False, True])
def test_logits_match_transformers(tmp_path, tie):
    path, hf = make_hf_llama(tmp_path, tie=tie)
    native = prge.CausalLM.from_pretrained(str(path))
    ids = torch.randint(0, 128, (3, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = hf(ids).logits
    got = native.logits(ids)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_adapters_start_as_identity(tiny_llama):
    """B = 0 at init (LoRA-FA), so attaching adapters must not change the logits."""
    path, hf = tiny_llama
    native = prge.CausalLM.from_pretrained(str(path))
    ids = torch.randint(0, 128, (2, 9))
    before = native.logits(ids)
    native.attach_adapters(prge.AdapterOptions(rank=4, alpha=8))
    adapters = native.adapters()
    assert len(adapters) == 2 * 7 and [a["index"] for a in adapters] == list(range(14))
    assert all(float(a["lora_b"].abs().max()) == 0.0 for a in adapters)
    assert torch.equal(native.logits(ids), before)


def test_bad_model_inputs_are_named(tmp_path, tiny_llama):
    path, _ = tiny_llama
    native = prge.CausalLM.from_pretrained(str(path))
    with pytest.raises(ValueError, match="input_ids must be a 2-D int64"):
        native.logits(torch.zeros(4, dtype=torch.int64))
    with pytest.raises(RuntimeError, match="model directory not found"):
        prge.CausalLM.from_pretrained(str(tmp_path / "nope"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text('{"model_type": "llama", "vocab_size": 8}')
    with pytest.raises(RuntimeError, match="missing key 'hidden_size'"):
        prge.CausalLM.from_pretrained(str(tmp_path / "broken"))
    with pytest.raises(ValueError, match="unknown adapter target 'qkv_proj'"):
        native.attach_adapters(prge.AdapterOptions(targets=["qkv_proj"]))
    with pytest.raises(ValueError, match="targets must be int64 with the shape of input_ids"):
        prge.TokenBatch(torch.zeros(2, 5, dtype=torch.int64), torch.zeros(2, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="at least one answer token"):
        prge.TokenBatch(torch.zeros(2, 5, dtype=torch.int64), torch.full((2, 5), -100))

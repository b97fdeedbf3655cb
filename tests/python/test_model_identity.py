"""A model directory's fingerprint (prge.model_identity): every tensor counts, however small or
large, config.json counts by content, and a copied directory is the same model."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import make_hf_llama
from prge.model_identity import SAMPLE, check_same_model, model_fingerprint


def test_a_change_to_any_tensor_or_to_the_config_changes_the_fingerprint(tmp_path):
    model_dir, _ = make_hf_llama(tmp_path, vocab=64)
    weights = model_dir / "model.safetensors"
    tensors = load_file(weights)
    tensors["big.weight"] = torch.zeros(4 * SAMPLE)  # sampled at start, middle and end, not read whole
    save_file(tensors, weights)
    original = model_fingerprint(model_dir)
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps(dict(reversed(config.items())), indent=4))
    assert model_fingerprint(copy) == original  # moved, copied, config.json saved with other spacing
    for name in tensors:
        changed = dict(tensors)
        changed[name] = tensors[name] + 1  # each tensor changed alone, whole
        save_file(changed, weights)
        assert model_fingerprint(model_dir) != original, name
    save_file(tensors, weights)
    assert model_fingerprint(model_dir) == original
    (model_dir / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-3}))
    assert model_fingerprint(model_dir) != original


@pytest.mark.parametrize("stored", [5, ["a"], "abc", "G" * 64])
def test_a_stored_fingerprint_prge_did_not_write_is_named_as_damaged(tmp_path, stored):
    model_dir, _ = make_hf_llama(tmp_path, vocab=64)
    with pytest.raises(ValueError, match=r"^run/summary.json: its model fingerprint is not what prge writes"):
        check_same_model(stored, model_dir, "run/summary.json")
    check_same_model(None, model_dir, "run/summary.json")  # written before fingerprints were stored
    check_same_model(model_fingerprint(model_dir), model_dir, "run/summary.json")


@pytest.mark.parametrize("offsets", [["0", "10"], [None, 8], [0, 100000.5], [-100000, 8], [0, 10 ** 30], [8, 0]])
def test_a_header_with_offsets_outside_the_data_is_read_whole_not_a_traceback(tmp_path, offsets):
    """A damaged safetensors header is the loader's to name (file and tensor); the fingerprint,
    computed before the model loads, reads such a file whole instead of seeking where it says."""
    model_dir, _ = make_hf_llama(tmp_path, vocab=64)
    weights = model_dir / "model.safetensors"
    data = weights.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8: 8 + length])
    name = next(k for k in header if k != "__metadata__")
    header[name]["data_offsets"] = offsets
    text = json.dumps(header).encode()
    weights.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + length:])
    first = model_fingerprint(model_dir)
    assert len(first) == 64 and model_fingerprint(model_dir) == first

"""The weights of a model directory are read from the files transformers reads them from:
model.safetensors when it exists, else model.safetensors.index.json's shards; other
*.safetensors files beside them (a consolidated.safetensors, a stray copy) are never read, and
what transformers could not load either is refused naming the files."""
import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

import prge
from conftest import make_hf_llama
from prge._core import weight_files, wrapper_text_weight_name


def logits_equal_transformers(model_dir, hf):
    ids = torch.randint(0, 20, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = hf(ids).logits
    torch.testing.assert_close(prge.CausalLM.from_pretrained(str(model_dir)).logits(ids), expected,
                               rtol=1e-4, atol=1e-4)


def other_weights(model_dir):
    """The checkpoint's tensors with other values: what a stray file beside it would hold."""
    return {name: torch.randn_like(t) for name, t in load_file(str(model_dir / "model.safetensors")).items()}


@pytest.mark.parametrize("stray", ["consolidated.safetensors", "a-backup.safetensors", "model-copy.safetensors"])
def test_a_second_safetensors_file_beside_model_safetensors_is_not_read(tmp_path, stray):
    model_dir, hf = make_hf_llama(tmp_path)
    save_file(other_weights(model_dir), str(model_dir / stray))
    logits_equal_transformers(model_dir, hf)
    assert weight_files(str(model_dir)) == [str(model_dir / "model.safetensors")]


def sharded(tmp_path):
    """The tiny Llama saved in shards with their index, as save_pretrained writes a large model."""
    model_dir, hf = make_hf_llama(tmp_path)
    out = tmp_path / "sharded"
    hf.save_pretrained(out, max_shard_size="20KB")
    return out, hf, json.loads((out / "model.safetensors.index.json").read_text())


def test_a_sharded_checkpoint_is_read_through_its_index_only(tmp_path):
    model_dir, hf, index = sharded(tmp_path)
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1
    assert weight_files(str(model_dir)) == [str(model_dir / s) for s in shards]
    # Mistral's repositories hold a consolidated.safetensors (their own format) beside the shards.
    save_file(other_weights(tmp_path / "tiny"), str(model_dir / "consolidated.safetensors"))
    logits_equal_transformers(model_dir, hf)


def test_model_safetensors_is_read_before_an_index_beside_it(tmp_path):
    """save_pretrained of the whole model over a sharded save removes the shards and leaves the
    index; transformers then reads model.safetensors, and so does prge."""
    model_dir, _, _ = sharded(tmp_path)
    _, hf = make_hf_llama(tmp_path / "other", seed=1)
    hf.save_pretrained(model_dir)
    assert (model_dir / "model.safetensors.index.json").exists()
    assert weight_files(str(model_dir)) == [str(model_dir / "model.safetensors")]
    logits_equal_transformers(model_dir, hf)


def test_a_shard_the_index_names_but_the_directory_lacks_is_named(tmp_path, capsys):
    import shutil

    from conftest import make_tiny_assets, write_config
    from prge.cli import main

    model_dir, _, index = sharded(tmp_path)
    assets_dir, data_dir = make_tiny_assets(tmp_path / "assets")
    shutil.copy(assets_dir / "tokenizer.json", model_dir / "tokenizer.json")
    config = write_config(tmp_path, model_dir, data_dir)
    assert main(["check", str(config)]) == 0
    missing = sorted(set(index["weight_map"].values()))[-1]
    (model_dir / missing).unlink()
    words = f"model.safetensors.index.json: weight_map: tensor .* is in {missing}, which .* does not have"
    with pytest.raises(RuntimeError, match=words):
        prge.CausalLM.from_pretrained(str(model_dir))
    # `prge check` finds it too, reading no weights.
    capsys.readouterr()
    assert main(["check", str(config)]) != 0
    assert missing in capsys.readouterr().err


def test_a_tensor_in_two_shards_is_refused_naming_both(tmp_path):
    model_dir, _, index = sharded(tmp_path)
    first, second = sorted(set(index["weight_map"].values()))[:2]
    moved = load_file(str(model_dir / first))
    name = sorted(moved)[0]
    save_file({**load_file(str(model_dir / second)), name: moved[name]}, str(model_dir / second))
    with pytest.raises(RuntimeError, match=f"tensor {name} is in both {first} and {second}"):
        prge.CausalLM.from_pretrained(str(model_dir))


def test_an_index_without_a_weight_map_is_named(tmp_path):
    model_dir, _, _ = sharded(tmp_path)
    (model_dir / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}}))
    with pytest.raises(RuntimeError, match="index.json: weight_map: missing"):
        prge.CausalLM.from_pretrained(str(model_dir))


def test_safetensors_files_transformers_would_not_read_either_are_refused_by_name(tmp_path):
    model_dir, _ = make_hf_llama(tmp_path)
    (model_dir / "model.safetensors").rename(model_dir / "consolidated.safetensors")
    with pytest.raises(RuntimeError, match="no model.safetensors nor model.safetensors.index.json.*it has "
                                           "consolidated.safetensors"):
        prge.CausalLM.from_pretrained(str(model_dir))
    (model_dir / "consolidated.safetensors").unlink()
    with pytest.raises(RuntimeError, match="no model.safetensors"):
        prge.CausalLM.from_pretrained(str(model_dir))


@pytest.mark.parametrize("name,text", [
    ("model.language_model.layers.3.self_attn.q_proj.weight", "model.layers.3.self_attn.q_proj.weight"),
    ("language_model.model.norm.weight", "model.norm.weight"),
    ("language_model.lm_head.weight", "lm_head.weight"),
    ("lm_head.weight", "lm_head.weight"),
    ("model.vision_tower.vision_model.embeddings.patch_embedding.weight", ""),
    ("model.multi_modal_projector.mm_input_projection_weight", ""),
])
def test_wrapper_names_map_to_the_text_models(name, text):
    assert wrapper_text_weight_name(name) == text


# (tensor, how the file's copy is changed, model.dtype, the error after the model directory's name)
BAD_WEIGHTS = {
    "integer": ("model.norm.weight", lambda t: t.round().to(torch.int32), "float32",
                r"weight 'model.norm.weight' has dtype int32; a model's weights are floating point"),
    "nan in the file": ("model.layers.1.mlp.down_proj.weight",
                        lambda t: t.index_put_((torch.tensor([0]), torch.tensor([3])), torch.tensor(float("nan"))),
                        "bfloat16", r"weight 'model.layers.1.mlp.down_proj.weight' holds 1 non-finite value\(s\) "
                                    r"\(NaN or inf\) of \d+ in the file: it is damaged"),
    "past float16's range": ("model.layers.0.self_attn.q_proj.weight",
                             lambda t: torch.cat([torch.full_like(t[:1], 7e4), t[1:]]), "float16",
                             r"weight 'model.layers.0.self_attn.q_proj.weight' holds \d+ non-finite value\(s\) "
                             r"\(NaN or inf\) of \d+ after conversion from float32 to float16: its values exceed "
                             r"float16's range \(model.dtype: float32 or bfloat16 keeps them\)"),
}


@pytest.mark.parametrize("case", sorted(BAD_WEIGHTS))
def test_a_weight_that_is_not_a_finite_float_in_the_dtype_is_named_at_load(tmp_path, case):
    """torch would convert an integer weight silently, and a NaN or inf would only show as a NaN
    loss at the first evaluation: both are named when the model loads."""
    name, change, dtype, message = BAD_WEIGHTS[case]
    model_dir, _ = make_hf_llama(tmp_path)
    tensors = load_file(str(model_dir / "model.safetensors"))
    tensors[name] = change(tensors[name])
    save_file(tensors, str(model_dir / "model.safetensors"))
    with pytest.raises(RuntimeError, match=rf"^{model_dir}: {message}"):
        prge.CausalLM.from_pretrained(str(model_dir), dtype=dtype)
    if case == "past float16's range":
        for kept in ("float32", "bfloat16"):
            prge.CausalLM.from_pretrained(str(model_dir), dtype=kept)


def test_a_bad_weight_in_a_sharded_checkpoint_names_its_shard(tmp_path):
    """Where the weights come from several files, the error names the one that holds the bad
    tensor, not only the directory."""
    model_dir, _, index = sharded(tmp_path)
    name = "model.layers.1.mlp.down_proj.weight"
    shard = index["weight_map"][name]
    tensors = load_file(str(model_dir / shard))
    tensors[name][0, 3] = float("nan")
    save_file(tensors, str(model_dir / shard), metadata={"format": "pt"})
    with pytest.raises(RuntimeError, match=rf"^{model_dir}: weight '{name}' holds 1 non-finite value.* "
                                           rf"\(in {re.escape(shard)}\)$"):
        prge.CausalLM.from_pretrained(str(model_dir))

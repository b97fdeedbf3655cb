"""Each family through the product: `prge train` on a small task, `prge adapters export` loaded by
peft onto transformers' model of that family (PEFT's target names: Phi-3's fused qkv_proj and
gate_up_proj) with prge's logits, and `--merge` loaded by transformers with them; a .gguf file
as model.name trains too."""
import json
import shutil

import pytest
import torch
import yaml

import prge
from conftest import make_tiny_assets, write_config
from installed import installed_module
from prge.cli import main
from test_families import family_model

peft = installed_module("peft", "pip install peft")
TOL = 1e-4  # of max |logits|, float32


def family_run(tmp_path, kind, mezo=False):
    """A model dir of the family with make_tiny_assets' tokenizer, and a finished 3-step run
    (of P-RGE's LoRA-FA adapters, or with `mezo` of MeZO on every weight)."""
    llama_dir, data_dir = make_tiny_assets(tmp_path)
    hf, _ = family_model(kind)
    vocab = json.loads((llama_dir / "tokenizer.json").read_text())["model"]["vocab"]
    hf.resize_token_embeddings(max(vocab.values()) + 1)  # the tokenizer's 15 words
    hf.config.eos_token_id, hf.config.pad_token_id = 1, 0
    model_dir = tmp_path / kind
    hf.save_pretrained(model_dir)
    shutil.copy(llama_dir / "tokenizer.json", model_dir / "tokenizer.json")
    # The word-level tokenizer as itself, not as the family's own tokenizer class.
    (model_dir / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "TokenizersBackend"}))
    config = write_config(tmp_path, model_dir, data_dir, optimizer={"lr": 0.5},
                          run={"steps": 3, "eval_every": 0, "output_dir": str(tmp_path / "run")})
    if mezo:
        settings = yaml.safe_load(config.read_text())
        settings.update(adapter=None, estimator={"kind": "mezo", "queries": 1, "parallel": "sequential"},
                        optimizer={"lr": 0.05})
        config.write_text(yaml.safe_dump(settings))
    assert main(["train", str(config), "--no-progress"]) == 0
    return model_dir, tmp_path / "run"


# (Not qwen2 here: transformers 5 rebuilds a Qwen2 model directory's tokenizer as its own byte-level
# BPE whatever tokenizer_config.json says, which the word-level test tokenizer is not; qwen3 has
# the same layout, and llama_biases the biased projections.)
@pytest.mark.parametrize("kind", ["qwen3", "gemma3_text", "gemma3", "phi3", "mistral_window", "ministral",
                                  "llama_biases"])
def test_exported_adapters_and_merged_models_load_in_peft_and_transformers(tmp_path, kind, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    import prge
    from prge.adapters import load_run, module_names

    model_dir, run_dir = family_run(tmp_path, kind)
    _, _, model = load_run(run_dir)
    assert max(a["lora_b"].abs().max().item() for a in model.adapters()) > 0
    ids = torch.randint(1, 15, (2, 9), generator=torch.Generator().manual_seed(3))
    ours = model.logits(ids)
    assert main(["adapters", "export", str(run_dir), "--out", str(tmp_path / "peft")]) == 0
    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(base, str(tmp_path / "peft")).eval()
    # PEFT wraps exactly the modules prge adapts (for the gemma3 wrapper: not the vision tower's).
    wrapped = {name.removeprefix("base_model.model.") for name, m in peft_model.named_modules()
               if hasattr(m, "lora_A") and "default" in m.lora_A}
    assert wrapped == {model.hf_module_name(i, p) for i in range(model.spec.num_hidden_layers)
                       for p in model.spec.projections}
    # The same names from config.json alone (prge check compares an adapter.init_from with them,
    # reading no weights): the exported adapter is a starting point it accepts, at its rank only.
    spec = prge.ArchSpec.from_json_file(str(model_dir / "config.json"))
    assert wrapped == set(module_names(spec).values())
    # and each projection's [out, in] (prge check's expected lora_A / lora_B shapes): the modules' own
    for name, module in peft_model.named_modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            assert list(module.base_layer.weight.shape) == spec.projection_shape(name.rsplit(".", 1)[1]), name
    start = ["--set", f"adapter.init_from={tmp_path / 'peft'}"]
    assert main(["check", str(run_dir / "config.yaml"), *start]) == 0
    assert main(["check", str(run_dir / "config.yaml"), *start, "--set", "adapter.rank=3"]) == 2
    assert "rank 4 there, 3 under the config's adapter section" in capsys.readouterr().err
    with torch.no_grad():
        theirs = peft_model(ids).logits
    scale = theirs.abs().max().item()
    assert (ours - theirs).abs().max().item() <= TOL * scale
    processor = model_dir / "preprocessor_config.json"  # a wrapper's image processor, kept with its vision tower
    processor.write_text(json.dumps({"image_processor_type": "Gemma3ImageProcessor"}))
    assert main(["adapters", "export", str(run_dir), "--out", str(tmp_path / "merged"), "--merge"]) == 0
    assert (tmp_path / "merged" / processor.name).read_text() == processor.read_text()
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"), dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)  # PEFT changed the first
    assert type(merged) is type(base)
    # Every tensor of the base checkpoint is in the merged one under its own name (a wrapper's
    # vision tower too), the adapted projections changed, the rest equal.
    base_state, merged_state = base.state_dict(), merged.state_dict()
    assert base_state.keys() == merged_state.keys()
    adapted = {name + ".weight" for name in wrapped}
    for name, tensor in base_state.items():
        assert torch.equal(tensor, merged_state[name]) != (name in adapted), name
    with torch.no_grad():
        assert (ours - merged(ids).logits).abs().max().item() <= TOL * scale


@pytest.mark.parametrize("kind", ["gemma3", "phi3"])
def test_a_mezo_run_exports_its_trained_model_under_the_checkpoints_own_names(tmp_path, kind):
    """MeZO's trained weights written whole as the family's checkpoint (Phi-3's fused projections,
    the gemma3 wrapper's language-model names with its vision tower kept as it was): transformers
    loads them with prge's logits, and every text weight moved."""
    from transformers import AutoModelForCausalLM

    from prge.adapters import load_run

    model_dir, run_dir = family_run(tmp_path, kind, mezo=True)
    _, _, model = load_run(run_dir)
    assert main(["adapters", "export", str(run_dir), "--out", str(tmp_path / "full"), "--merge"]) == 0
    trained = AutoModelForCausalLM.from_pretrained(str(tmp_path / "full"), dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    assert type(trained) is type(base)
    base_state, trained_state = base.state_dict(), trained.state_dict()
    assert base_state.keys() == trained_state.keys()
    for name, tensor in base_state.items():
        text = "vision_tower" not in name and "multi_modal_projector" not in name
        assert torch.equal(tensor, trained_state[name]) != text, name
    ids = torch.randint(1, 15, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        theirs = trained(ids).logits
    assert (model.logits(ids) - theirs).abs().max().item() <= TOL * theirs.abs().max().item()


def test_a_gguf_file_is_a_model_name(tmp_path):
    """model.name may be a .gguf file: converted once into the cache (keyed by path, size and
    modification time), giving the source model's logits."""
    from safetensors.torch import load_file

    from gguf_fixtures import write_gguf
    from prge.models import resolve_model

    installed_module("gguf", "pip install gguf")
    llama_dir, _ = make_tiny_assets(tmp_path)
    config = json.loads((llama_dir / "config.json").read_text())
    tokens = ["a", "b", "ab"] + [f"t{i}" for i in range(config["vocab_size"] - 3)]
    write_gguf(tmp_path / "tiny.gguf", "llama", config, load_file(str(llama_dir / "model.safetensors")),
               tokens=tokens)
    converted = resolve_model(str(tmp_path / "tiny.gguf"))
    assert converted.parent == tmp_path / "cache" / "models" and resolve_model(str(tmp_path / "tiny.gguf")) == converted
    ids = torch.randint(1, 15, (2, 9), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(prge.CausalLM.from_pretrained(str(converted)).logits(ids),
                               prge.CausalLM.from_pretrained(str(llama_dir)).logits(ids), rtol=1e-5, atol=1e-5)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRGE_CACHE", str(tmp_path / "cache"))

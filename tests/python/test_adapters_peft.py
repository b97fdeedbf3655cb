"""Adapters out (PEFT's LoRA format, or merged into a Hugging Face model) and in (a PEFT
adapter as a run's starting point): transformers + peft must compute the logits prge does."""
import json

import pytest
import torch

from conftest import make_tiny_assets, write_config
from installed import installed_module
from prge.cli import main

peft = installed_module("peft", "pip install peft")
TOL = 1e-4  # of max |logits|, float32


def assert_same_logits(ours, theirs):
    scale = theirs.abs().max().item()
    assert (ours - theirs).abs().max().item() <= TOL * scale, ((ours - theirs).abs().max().item(), scale)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished run whose B moved away from zero."""
    tmp = tmp_path_factory.mktemp("adapters")
    model_dir, data_dir = make_tiny_assets(tmp)
    config = write_config(tmp, model_dir, data_dir, optimizer={"lr": 0.5}, run={"steps": 4, "eval_every": 0})
    assert main(["train", str(config), "--no-progress"]) == 0
    from prge.adapters import load_run

    _, _, model = load_run(tmp / "run")
    assert max(a["lora_b"].abs().max().item() for a in model.adapters()) > 1e-4
    ids = torch.randint(1, 15, (2, 9), generator=torch.Generator().manual_seed(3))
    return tmp, model_dir, model, ids


def hf_model(path):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(str(path), torch_dtype=torch.float32).eval()


def test_peft_loads_the_exported_adapter(trained):
    from peft import PeftModel

    tmp, model_dir, model, ids = trained
    assert main(["adapters", "export", str(tmp / "run"), "--out", str(tmp / "peft")]) == 0
    config = json.loads((tmp / "peft" / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8 and len(config["target_modules"]) == 7
    with torch.no_grad():
        theirs = PeftModel.from_pretrained(hf_model(model_dir), str(tmp / "peft")).eval()(ids).logits
    assert_same_logits(model.logits(ids), theirs)


def test_merged_model_loads_in_transformers(trained):
    tmp, _, model, ids = trained
    assert main(["adapters", "export", str(tmp / "run"), "--out", str(tmp / "merged"), "--merge"]) == 0
    assert (tmp / "merged" / "tokenizer.json").is_file()
    with torch.no_grad():
        theirs = hf_model(tmp / "merged")(ids).logits
    assert_same_logits(model.logits(ids), theirs)


def test_a_peft_adapter_is_a_starting_point(trained, capsys):
    from peft import LoraConfig, get_peft_model

    import prge
    from prge.adapters import load_peft
    from prge.models import resolve_model

    tmp, model_dir, _, ids = trained
    torch.manual_seed(0)
    targets = list(prge.PROJECTIONS)
    peft_model = get_peft_model(hf_model(model_dir), LoraConfig(r=4, lora_alpha=8, target_modules=targets,
                                                                init_lora_weights=False))  # B != 0
    peft_model.save_pretrained(str(tmp / "start"))
    native = prge.LlamaModel.from_pretrained(str(resolve_model(str(model_dir))))
    options = prge.AdapterOptions(rank=4, alpha=8)
    native.attach_adapters(options)
    load_peft(native, tmp / "start", options)
    with torch.no_grad():
        assert_same_logits(native.logits(ids), peft_model.eval()(ids).logits)
    # Through a config: adapter.init_from; a mismatched rank is named.
    config = write_config(tmp, model_dir, tmp / "food", adapter={"init_from": str(tmp / "start")},
                          run={"steps": 0, "eval_every": 0, "output_dir": str(tmp / "from_peft")})
    assert main(["train", str(config), "--no-progress"]) == 0
    config = write_config(tmp, model_dir, tmp / "food", adapter={"rank": 2, "init_from": str(tmp / "start")})
    assert main(["train", str(config), "--no-progress"]) == 2
    assert "adapter.init_from:" in capsys.readouterr().err

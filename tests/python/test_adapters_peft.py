"""Adapters out (PEFT's LoRA format, or merged into a Hugging Face model) and in (a PEFT
adapter as a run's starting point): transformers + peft must compute the logits prge does."""
import json
import os
import re

import pytest
import torch
import yaml
from pathlib import Path

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
    tmp, model_dir, model, ids = trained
    (model_dir / "additional_chat_templates").mkdir(exist_ok=True)  # named chat templates, as transformers saves them
    (model_dir / "additional_chat_templates" / "tool_use.jinja").write_text("TOOLS {{ messages[0]['content'] }}")
    # every file written with the mode the umask gives: the weights (safetensors itself creates
    # 0600) and the copies alike (not the source's, here a read-only store's 0444)
    (model_dir / "tokenizer.json").chmod(0o444)
    mask = os.umask(0o077)
    try:
        assert main(["adapters", "export", str(tmp / "run"), "--out", str(tmp / "merged"), "--merge"]) == 0
    finally:
        os.umask(mask)
        (model_dir / "tokenizer.json").chmod(0o644)
    assert (tmp / "merged" / "tokenizer.json").is_file()
    assert (tmp / "merged" / "additional_chat_templates" / "tool_use.jinja").is_file()
    modes = {p.relative_to(tmp / "merged").as_posix(): p.stat().st_mode & 0o777
             for p in (tmp / "merged").rglob("*") if p.is_file() and p.name != ".prge.lock"}
    assert "model.safetensors" in modes and set(modes.values()) == {0o600}, modes
    with torch.no_grad():
        theirs = hf_model(tmp / "merged")(ids).logits
    assert_same_logits(model.logits(ids), theirs)


def test_a_bfloat16_run_merges_into_its_float32_checkpoints_dtype(trained, capsys):
    """A bfloat16 run on a float32 checkpoint: --merge folds (alpha / r) B A into the float32
    weights as stored, so the merged weights differ from the base by the adapters' product to
    float32 rounding (bfloat16 weights would round most of a small product away)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from prge.adapters import load_run

    tmp, model_dir, _, _ = trained
    run = tmp / "bf16_run"
    config = write_config(tmp, model_dir, tmp / "food", model={"dtype": "bfloat16"}, optimizer={"lr": 1e-3},
                          run={"steps": 3, "eval_every": 0, "output_dir": str(run)})
    assert main(["train", str(config), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["adapters", "export", str(run), "--out", str(tmp / "bf16_merged"), "--merge"]) == 0
    assert "the run trained in bfloat16; its base checkpoint stores float32" in capsys.readouterr().out
    merged_file = tmp / "bf16_merged" / "model.safetensors"
    with safe_open(str(merged_file), "pt") as f:
        assert {f.get_slice(name).get_dtype() for name in f.keys()} == {"F32"}
    assert json.loads((tmp / "bf16_merged" / "config.json").read_text())["dtype"] == "float32"
    _, _, model = load_run(run)
    base, merged = load_file(str(model_dir / "model.safetensors")), load_file(str(merged_file))
    a = next(a for a in model.adapters() if a["name"].endswith("layers.0.q_proj"))
    delta = a["scaling"] * (a["lora_b"].double() @ a["lora_a"].double())
    assert delta.abs().max() > 0
    moved = merged["model.layers.0.self_attn.q_proj.weight"].double() - base["model.layers.0.self_attn.q_proj.weight"].double()
    assert (moved - delta).abs().max() <= 1e-6 * base["model.layers.0.self_attn.q_proj.weight"].abs().max()


def test_a_float32_run_on_a_bfloat16_checkpoint_merges_into_float32(trained):
    """The wider dtype of run and checkpoint: a float32 run's small B A on bfloat16 weights is
    folded into float32, not rounded away."""
    import shutil

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    tmp, model_dir, _, _ = trained
    half = tmp / "tiny_bf16"
    shutil.copytree(model_dir, half)
    save_file({k: v.to(torch.bfloat16) for k, v in load_file(str(model_dir / "model.safetensors")).items()},
              str(half / "model.safetensors"), metadata={"format": "pt"})
    run = tmp / "f32_on_bf16"
    config = write_config(tmp, half, tmp / "food", optimizer={"lr": 1e-3},
                          run={"steps": 3, "eval_every": 0, "output_dir": str(run)})
    assert main(["train", str(config), "--no-progress"]) == 0
    assert main(["adapters", "export", str(run), "--out", str(tmp / "f32_on_bf16_merged"), "--merge"]) == 0
    with safe_open(str(tmp / "f32_on_bf16_merged" / "model.safetensors"), "pt") as f:
        assert {f.get_slice(name).get_dtype() for name in f.keys()} == {"F32"}


def test_a_mezo_run_exports_its_trained_weights_as_a_hugging_face_model(tmp_path, capsys):
    """MeZO trains every weight and has no adapter: --merge writes the trained model (bit for
    bit what the run saved), `prge generate` reads the run, and a PEFT export is refused by name."""
    from safetensors.torch import load_file

    from prge.adapters import load_run
    from prge.generation import load_model

    model_dir, data_dir = make_tiny_assets(tmp_path)
    config = write_config(tmp_path, model_dir, data_dir, optimizer={"lr": 0.05}, run={"steps": 3, "eval_every": 0})
    settings = yaml.safe_load(config.read_text())
    settings.update(adapter=None, estimator={"kind": "mezo", "queries": 1, "parallel": "sequential"})
    config.write_text(yaml.safe_dump(settings))
    assert main(["train", str(config), "--no-progress"]) == 0
    run = tmp_path / "run"
    assert main(["adapters", "export", str(run), "--out", str(tmp_path / "peft")]) == 2
    assert ("the run trained full weights (MeZO), not adapters: there is no PEFT adapter to write; --merge writes "
            "its trained model") in capsys.readouterr().err
    assert not (tmp_path / "peft").exists()
    assert main(["adapters", "export", str(run), "--out", str(tmp_path / "full"), "--merge"]) == 0
    trained, written = load_file(str(run / "trained.safetensors")), load_file(str(tmp_path / "full" / "model.safetensors"))
    base = load_file(str(model_dir / "model.safetensors"))
    assert set(written) == set(base)
    for name, tensor in written.items():
        assert torch.equal(tensor, trained[name]), name
    assert any(not torch.equal(written[n], base[n]) for n in base)  # the run moved the weights
    ids = torch.randint(1, 15, (2, 9), generator=torch.Generator().manual_seed(3))
    _, _, model = load_run(run)
    with torch.no_grad():
        theirs = hf_model(tmp_path / "full")(ids).logits
    assert_same_logits(model.logits(ids), theirs)
    assert torch.equal(load_model(str(run))[0].logits(ids), model.logits(ids))


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
    native = prge.CausalLM.from_pretrained(str(resolve_model(str(model_dir))))
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
    refused = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.search(r"run\.yaml:\d+:\d+: adapter\.init_from: ", refused)  # where the config names it
    assert "has rank 4 there, 2 under the config's adapter section" in refused
    # prge check finds what prge train would refuse, without loading a tensor, in the same words;
    # a directory without an adapter is named at its place in the config.
    assert main(["check", str(config)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == refused
    (tmp / "empty_dir").mkdir()
    (tmp / "a_file").write_text("")
    for path, words in [("nothing_here", "not found"), ("empty_dir", "has no adapter_config.json"),
                        ("a_file", "is a file; expected a PEFT adapter's directory")]:
        config = write_config(tmp, model_dir, tmp / "food", adapter={"init_from": str(tmp / path)})
        for command in (["check", str(config)], ["train", str(config), "--no-progress"]):
            assert main(command) == 2
            assert re.search(rf"run\.yaml:\d+:\d+: adapter\.init_from: .*{path} {re.escape(words)}",
                             capsys.readouterr().err)
    # a relative path is read from the working directory, which the message names
    config = write_config(tmp, model_dir, tmp / "food", adapter={"init_from": "nothing_here"})
    assert main(["check", str(config)]) == 2
    assert f"adapter.init_from: nothing_here not found (relative to the working directory {os.getcwd()})" \
        in capsys.readouterr().err


def test_a_run_from_a_peft_adapter_saved_over_since_is_refused(trained, capsys):
    """A run started from adapter.init_from stores only B; A is read from that adapter on every
    load, so an adapter saved over since (PEFT trains A too) would pair the trained B with
    another A: export and --resume refuse it by name, and take it again once restored. A run
    whose summary holds the base's fingerprint alone (written before the adapter counted) is
    taken as it is."""
    import shutil

    from prge.model_identity import model_fingerprint

    tmp, model_dir, _, _ = trained
    start = tmp / "start_saved_over"
    peft_adapter(model_dir, start, dict(r=4, lora_alpha=8, target_modules=ALL), seed=1)
    original = tmp / "start_saved_over_original"
    shutil.copytree(start, original)
    run = tmp / "from_start_saved_over"
    config = write_config(tmp, model_dir, tmp / "food", adapter={"init_from": str(start)},
                          run={"steps": 4, "eval_every": 0, "checkpoint_every": 2, "output_dir": str(run)})
    assert main(["train", str(config), "--no-progress"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["model_fingerprint"] == model_fingerprint(model_dir, start) != model_fingerprint(model_dir)
    peft_adapter(model_dir, start, dict(r=4, lora_alpha=8, target_modules=ALL), seed=2)  # saved over
    capsys.readouterr()
    assert main(["adapters", "export", str(run), "--out", str(tmp / "out_saved_over")]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'summary.json'}: the run trained on another model than {model_dir} with the adapter.init_from " \
           f"adapter {start} make now" in err, err
    for finished in ("trained.safetensors", "summary.json"):  # as if stopped after its last checkpoint
        (run / finished).rename(tmp / finished)
    assert main(["train", str(config), "--resume", "--no-progress"]) == 2
    assert f"{run / 'checkpoint-4' / 'state.json'}: the run trained on another model than {model_dir} with the " \
           "adapter.init_from adapter" in capsys.readouterr().err
    shutil.rmtree(start)
    shutil.copytree(original, start)
    assert main(["train", str(config), "--resume", "--no-progress"]) == 0
    assert main(["adapters", "export", str(run), "--out", str(tmp / "out_restored")]) == 0
    start.rename(tmp / "start_moved")  # gone: named as missing, not as another model
    assert main(["adapters", "export", str(run), "--out", str(tmp / "out_moved")]) == 2
    assert f"the run started from the PEFT adapter adapter.init_from: {start}, which is not there" in \
        capsys.readouterr().err
    (tmp / "start_moved").rename(start)
    (run / "summary.json").write_text(json.dumps({**summary, "model_fingerprint": model_fingerprint(model_dir)}))
    peft_adapter(model_dir, start, dict(r=4, lora_alpha=8, target_modules=ALL), seed=2)
    assert main(["adapters", "export", str(run), "--out", str(tmp / "out_old_summary")]) == 0


ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# PEFT settings that change the forward and that prge implements: each as a LoraConfig and
# the prge adapter settings that must reproduce PeftModel's logits.
PEFT_SETTINGS = {
    "rslora": (dict(r=4, lora_alpha=8, use_rslora=True, target_modules=ALL), dict(use_rslora=True)),
    "alpha_pattern": (dict(r=4, lora_alpha=8, target_modules=ALL, alpha_pattern={"q_proj": 32, "down_proj": 2}),
                      dict(alpha_pattern={"q_proj": 32, "down_proj": 2})),
    # k_proj's rank differs inside the fused q/k/v group, one layer's up_proj inside gate/up.
    "rank_pattern": (dict(r=4, lora_alpha=8, target_modules=ALL,
                          rank_pattern={"k_proj": 2, "model.layers.1.mlp.up_proj": 8}),
                     dict(rank_pattern={"k_proj": 2, "model.layers.1.mlp.up_proj": 8})),
    "all_three": (dict(r=4, lora_alpha=8, use_rslora=True, target_modules=["q_proj", "v_proj", "up_proj"],
                       rank_pattern={"v_proj": 6}, alpha_pattern={"layers.0.self_attn.q_proj": 3}),
                  dict(use_rslora=True, targets=["q_proj", "v_proj", "up_proj"], rank_pattern={"v_proj": 6},
                       alpha_pattern={"layers.0.self_attn.q_proj": 3})),
    "regex_targets": (dict(r=4, lora_alpha=8, target_modules=r".*\.(q_proj|down_proj)"),
                      dict(targets=["q_proj", "down_proj"])),
}


def peft_adapter(model_dir, out, settings: dict, seed: int = 0):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    peft_model = get_peft_model(hf_model(model_dir), LoraConfig(init_lora_weights=False, **settings))  # B != 0
    peft_model.save_pretrained(str(out))
    return peft_model.eval()


@pytest.mark.parametrize("case", sorted(PEFT_SETTINGS))
def test_peft_settings_give_peftmodels_logits(trained, case):
    """use_rslora, alpha_pattern, rank_pattern and regex target_modules are read, not ignored."""
    import prge
    from prge.adapters import load_peft

    tmp, model_dir, _, ids = trained
    theirs_settings, ours = PEFT_SETTINGS[case]
    peft_model = peft_adapter(model_dir, tmp / f"peft_{case}", theirs_settings)
    native = prge.CausalLM.from_pretrained(str(model_dir))
    options = prge.AdapterOptions(rank=4, alpha=8, **ours)
    native.attach_adapters(options)
    load_peft(native, tmp / f"peft_{case}", options)
    with torch.no_grad():
        assert_same_logits(native.logits(ids), peft_model(ids).logits)
    # The settings are not decorative: the same weights under plain LoRA give other logits.
    plain = prge.CausalLM.from_pretrained(str(model_dir))
    plain.attach_adapters(prge.AdapterOptions(rank=4, alpha=8, targets=ours.get("targets", ALL),
                                              rank_pattern=ours.get("rank_pattern", {})))
    load_peft_unchecked(plain, tmp / f"peft_{case}")
    if "use_rslora" in ours or "alpha_pattern" in ours:  # (rank_pattern shows in the shapes already)
        assert (plain.logits(ids) - native.logits(ids)).abs().max().item() > 1e-3


def load_peft_unchecked(model, adapter_dir):
    from safetensors.torch import load_file

    from prge.adapters import PEFT_PREFIX, module_names

    tensors, modules = load_file(str(adapter_dir / "adapter_model.safetensors")), module_names(model.spec)
    with torch.no_grad():
        for a in model.adapters():
            a["lora_a"].copy_(tensors[f"{PEFT_PREFIX}{modules[a['name']]}.lora_A.weight"])
            a["lora_b"].copy_(tensors[f"{PEFT_PREFIX}{modules[a['name']]}.lora_B.weight"])


def test_patterned_adapters_train_and_export_as_peft_reads_them(trained):
    """A run started from an rsLoRA adapter with rank and alpha patterns: its config states
    them, P-RGE trains through the per-part path of the fused projections, and the exported
    adapter loads in peft with prge's logits."""
    from peft import PeftModel

    from prge.adapters import load_run

    tmp, model_dir, _, ids = trained
    theirs, ours = PEFT_SETTINGS["all_three"]
    peft_adapter(model_dir, tmp / "start3", theirs)
    adapter = {"rank": 4, "alpha": 8, "init_from": str(tmp / "start3"), **ours}
    config = write_config(tmp, model_dir, tmp / "food", adapter=adapter, optimizer={"lr": 0.5},
                          run={"steps": 3, "eval_every": 0, "output_dir": str(tmp / "patterned")})
    assert main(["train", str(config), "--no-progress"]) == 0
    _, _, model = load_run(tmp / "patterned")
    assert main(["adapters", "export", str(tmp / "patterned"), "--out", str(tmp / "patterned_peft")]) == 0
    exported = json.loads((tmp / "patterned_peft" / "adapter_config.json").read_text())
    assert exported["use_rslora"] and exported["rank_pattern"] == {"v_proj": 6}
    with torch.no_grad():
        theirs_logits = PeftModel.from_pretrained(hf_model(model_dir), str(tmp / "patterned_peft")).eval()(ids).logits
    assert_same_logits(model.logits(ids), theirs_logits)
    # The config's adapter section must say what the adapter is: a missing pattern is named.
    adapter.pop("rank_pattern")
    config = write_config(tmp, model_dir, tmp / "food", adapter=adapter,
                          run={"steps": 1, "eval_every": 0, "output_dir": str(tmp / "mismatch")})
    assert main(["train", str(config), "--no-progress"]) == 2


def rslora_adapter(tmp, model_dir):
    """The module's PEFT adapter with rsLoRA on every projection (made once), to edit copies of."""
    source = tmp / "peft_rslora"
    if not source.is_dir():
        peft_adapter(model_dir, source, PEFT_SETTINGS["rslora"][0])
    return source


REFUSED_PEFT = [
    ({"use_dora": True}, "use_dora"),
    ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
    ({"bias": "all"}, "bias"),
    ({"layers_to_transform": [0]}, "layers_to_transform"),
    ({"fan_in_fan_out": True}, "fan_in_fan_out"),
    ({"lora_bias": True}, "lora_bias"),
    ({"exclude_modules": ["q_proj"]}, "exclude_modules"),
    ({"some_new_peft_field": 1}, "field 'some_new_peft_field'"),
    ({"target_modules": ["model.layers.0.self_attn.q_proj"]}, "some layers only"),
    ({"peft_type": "IA3"}, 'peft_type = "IA3": prge loads LoRA adapters'),
    ({"peft_type": "lora"}, 'peft_type = "lora": prge loads LoRA adapters (peft_type "LORA")'),
    ({"init_lora_weights": 1}, "init_lora_weights = 1: expected true, false or one of"),
    # Initialisations PeftModel runs again on load, changing the base weights (or a LoRA variant).
    ({"init_lora_weights": "pissa"}, 'init_lora_weights = "pissa" is not supported'),
    ({"init_lora_weights": "pissa_niter_4"}, 'init_lora_weights = "pissa_niter_4"'),
    ({"init_lora_weights": "olora"}, 'init_lora_weights = "olora"'),
    ({"init_lora_weights": "corda"}, 'init_lora_weights = "corda"'),
    ({"init_lora_weights": "loftq"}, 'init_lora_weights = "loftq"'),
    ({"init_lora_weights": "mica"}, 'init_lora_weights = "mica"'),
    # Values LoraConfig would not take: named, not a traceback.
    ({"r": None}, "r = null: expected an integer rank >= 1"),
    ({"r": 4.5}, "r = 4.5: expected an integer rank >= 1"),
    ({"lora_alpha": "eight"}, 'lora_alpha = "eight": expected a number'),
    ({"target_modules": 5}, "target_modules = 5: expected a regular expression or a list"),
    ({"target_modules": ["q_proj", None]}, 'target_modules = ["q_proj", null]'),
    ({"rank_pattern": ["q_proj"]}, 'rank_pattern = ["q_proj"]: expected an object'),
    ({"rank_pattern": {"q_proj": "four"}}, 'rank_pattern["q_proj"] = "four": expected an integer rank'),
    ({"alpha_pattern": {"q_proj(": 4}}, "alpha_pattern key: 'q_proj(' is not a Python regular expression"),
]


@pytest.mark.parametrize("change,words", REFUSED_PEFT, ids=[f"{i}-{w[:24]}" for i, (_, w) in enumerate(REFUSED_PEFT)])
def test_peft_fields_that_change_the_forward_are_refused_by_name(trained, capsys, change, words):
    tmp, model_dir, _, _ = trained
    source = rslora_adapter(tmp, model_dir)
    edited = tmp / f"refused_{REFUSED_PEFT.index((change, words))}"
    edited.mkdir(exist_ok=True)
    config = json.loads((source / "adapter_config.json").read_text())
    config.update(change)
    (edited / "adapter_config.json").write_text(json.dumps(config))
    (edited / "adapter_model.safetensors").write_bytes((source / "adapter_model.safetensors").read_bytes())
    run_config = write_config(tmp, model_dir, tmp / "food", adapter={"use_rslora": True, "init_from": str(edited)},
                              run={"steps": 1, "eval_every": 0, "output_dir": str(tmp / "refused_run")})
    assert main(["train", str(run_config), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"prge: error: \S*run\.yaml:\d+:\d+: adapter\.init_from: ", err) and words in err, err
    assert main(["check", str(run_config)]) == 2  # found before any weight is loaded, in the same words
    assert capsys.readouterr().err == err


@pytest.mark.parametrize("damage,words", [
    (lambda weights: weights[:len(weights) // 2], "not a readable safetensors file"),
    (lambda weights: b"", "not a readable safetensors file"),
    ("config", "adapter_config.json:1:1: not UTF-8 text (byte 0xff)"),
])
def test_a_damaged_peft_adapter_is_named(trained, capsys, damage, words):
    """A truncated or empty adapter_model.safetensors, an adapter_config.json that is not
    UTF-8: `prge: error:` naming adapter.init_from's place and the file, not a traceback; prge
    check finds it too (it reads the safetensors header)."""
    tmp, model_dir, _, _ = trained
    source = rslora_adapter(tmp, model_dir)
    damaged = tmp / f"damaged_{words[:8]}_{len(list(tmp.glob('damaged_*')))}"
    damaged.mkdir()
    config, weights = (source / "adapter_config.json").read_bytes(), (source / "adapter_model.safetensors").read_bytes()
    (damaged / "adapter_config.json").write_bytes(b"\xff" + config if damage == "config" else config)
    (damaged / "adapter_model.safetensors").write_bytes(weights if damage == "config" else damage(weights))
    run_config = write_config(tmp, model_dir, tmp / "food", adapter={"use_rslora": True, "init_from": str(damaged)},
                              run={"steps": 1, "eval_every": 0, "output_dir": str(tmp / "damaged_run")})
    for command in (["train", str(run_config), "--no-progress"], ["check", str(run_config)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert re.search(rf"prge: error: \S*run\.yaml:\d+:\d+: adapter\.init_from: {re.escape(str(damaged))}", err)
        assert words in err, err


@pytest.mark.parametrize("edit,words", [
    ("drop", "has no tensor base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"),
    ("rank", "lora_A.weight has shape (3, 48), the model and adapter_config.json expect (4, 48)"),
    ("features", "lora_B.weight has shape (47, 4), the model and adapter_config.json expect (48, 4)"),
    ("integers", "lora_A.weight holds int32 values; a LoRA weight is floating point"),
    ("nan", "lora_A.weight holds 192 non-finite value(s)"),
])
def test_an_adapter_whose_tensors_are_not_its_configs_is_refused_by_check_and_train(trained, capsys, edit, words):
    """adapter_model.safetensors must hold each adapted module's lora_A / lora_B, floating point,
    finite, of the shapes the model and adapter_config.json's rank give: a missing tensor, another
    rank or number of features, integers or NaN are named by prge check (from config.json and the
    adapter alone) as by prge train."""
    from safetensors.torch import load_file, save_file

    tmp, model_dir, _, _ = trained
    source = rslora_adapter(tmp, model_dir)
    edited = tmp / f"tensors_{edit}"
    edited.mkdir()
    (edited / "adapter_config.json").write_bytes((source / "adapter_config.json").read_bytes())
    tensors = load_file(str(source / "adapter_model.safetensors"))
    up_a = "base_model.model.model.layers.0.mlp.up_proj.lora_A.weight"  # [4, 48]
    if edit == "drop":
        tensors.pop("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight")
    elif edit == "rank":
        tensors[up_a] = tensors[up_a][:3].clone()
    elif edit == "features":
        name = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"  # [48, 4]
        tensors[name] = tensors[name][:47].clone()
    elif edit == "integers":
        tensors[up_a] = tensors[up_a].to(torch.int32)
    else:
        tensors[up_a] = torch.full_like(tensors[up_a], float("nan"))
    save_file(tensors, str(edited / "adapter_model.safetensors"))
    run_config = write_config(tmp, model_dir, tmp / "food", adapter={"use_rslora": True, "init_from": str(edited)},
                              run={"steps": 1, "eval_every": 0, "output_dir": str(tmp / f"tensors_{edit}_run")})
    errors = []
    for command in (["check", str(run_config)], ["train", str(run_config), "--no-progress"]):
        assert main(command) == 2
        errors.append(capsys.readouterr().err.strip().splitlines()[-1])  # after transformers' progress bars
    assert errors[0] == errors[1] and words in errors[0] and "adapter.init_from:" in errors[0], errors
    assert not (tmp / f"tensors_{edit}_run" / "summary.json").exists()


def test_an_adapter_file_that_cannot_be_read_is_named_by_check_and_train(trained, capsys, monkeypatch):
    """An adapter_model.safetensors without read permission (simulated: these tests may run as
    root, whom permissions do not stop) is named at adapter.init_from's place by both commands,
    not a bare "[Errno 13]" from the run's fingerprint."""
    tmp, model_dir, _, _ = trained
    source = rslora_adapter(tmp, model_dir)
    run_config = write_config(tmp, model_dir, tmp / "food", adapter={"use_rslora": True, "init_from": str(source)},
                              run={"steps": 1, "eval_every": 0, "output_dir": str(tmp / "unreadable_run")})
    read_bytes = Path.read_bytes

    def denied(path):
        if path.name == "adapter_model.safetensors":
            raise PermissionError(13, "Permission denied", str(path))
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", denied)
    for command in (["check", str(run_config)], ["train", str(run_config), "--no-progress"]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert re.fullmatch(rf"prge: error: \S*run\.yaml:\d+:\d+: adapter\.init_from: "
                            rf"{re.escape(str(source / 'adapter_model.safetensors'))}: cannot be read \(Permission denied\)",
                            err), err


def test_paths_starting_with_a_tilde_are_the_home_directory(trained, capsys, monkeypatch):
    """adapter.init_from, model.name, data.data_dir and run.output_dir written with a leading ~
    (as a shell would take them) name the home directory's files for check and train alike, and
    check ends with an OK line; a path of spaces is refused at its line, not looked up."""
    tmp, model_dir, _, _ = trained
    source = rslora_adapter(tmp, model_dir)
    monkeypatch.setenv("HOME", str(tmp))

    def home(path):
        return "~/" + str(Path(path).relative_to(tmp))

    run_config = write_config(tmp, home(model_dir), home(tmp / "food"),
                              adapter={"use_rslora": True, "init_from": home(source)},
                              run={"steps": 1, "eval_every": 0, "output_dir": "~/tilde_run"})
    assert main(["check", str(run_config)]) == 0
    out, err = capsys.readouterr()
    shown = yaml.safe_load(out)
    assert shown["adapter"]["init_from"] == str(source) and shown["model"]["name"] == str(model_dir)
    assert shown["run"]["output_dir"] == str(tmp / "tilde_run")
    assert err.strip().splitlines()[-1].startswith(f"[prge] {run_config}: OK: the config, model and device pass prge train")
    assert main(["train", str(run_config), "--no-progress"]) == 0
    assert (tmp / "tilde_run" / "summary.json").is_file() and not Path("~").exists()
    # ./~/m is a folder named ~ here, not the home directory's m (Path.expanduser took it for that)
    here = tmp / "here"
    (here / "~").mkdir(parents=True)
    (here / "~" / "m").symlink_to(model_dir, target_is_directory=True)
    monkeypatch.chdir(here)
    capsys.readouterr()
    assert main(["check", str(run_config), "--set", "model.name=./~/m"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["model"]["name"] == "./~/m"
    blank = write_config(tmp, model_dir, tmp / "food", adapter={"init_from": "   "})
    assert main(["check", str(blank)]) == 2
    assert re.search(r"prge: error: \S*run\.yaml:\d+:\d+: adapter\.init_from: '   ' is only whitespace",
                     capsys.readouterr().err)


def test_config_patterns_that_match_nothing_or_a_module_twice_are_refused(tmp_path, capsys):
    """adapter.rank_pattern / alpha_pattern: a key that matches no adapted module (a typo; PEFT
    only warns) and keys that give one module two values (PEFT takes the first in the file's
    order, and its save_pretrained sorts the keys) are refused by name."""
    model_dir, data_dir = make_tiny_assets(tmp_path)
    for adapter, words in [
        ({"rank_pattern": {"q_porj": 2}}, "adapter.rank_pattern key 'q_porj' matches none of the adapted modules"),
        ({"targets": ["q_proj", "v_proj"], "alpha_pattern": {"k_proj": 2}},
         "adapter.alpha_pattern key 'k_proj' matches none of the adapted modules"),
        ({"alpha_pattern": {"up_proj": 2, "layers.1.mlp.up_proj": 32}},
         "module model.layers.1.mlp.up_proj matches adapter.alpha_pattern keys ")]:
        config = write_config(tmp_path, model_dir, data_dir, adapter=adapter, run={"steps": 1, "eval_every": 0})
        assert main(["train", str(config), "--no-progress", "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert words in err and ("'up_proj' (2)" in err) == ("alpha_pattern keys" in words), err
    config = write_config(tmp_path, model_dir, data_dir, run={"steps": 1, "eval_every": 0},
                          adapter={"alpha_pattern": {"layers\\.1\\.mlp\\.up_proj": 32, "layers\\.(?!1\\.)\\d+\\.mlp\\.up_proj": 2}})
    assert main(["train", str(config), "--no-progress", "--overwrite"]) == 0  # each module matched once


@pytest.mark.parametrize("target", ["lm_head", "embed_tokens"])
def test_a_peft_lora_on_modules_prge_does_not_adapt_is_refused(trained, capsys, target):
    """PeftModel applies a LoRA on lm_head or embed_tokens; prge adapts the projections only, so
    such an adapter is refused, naming its tensors, not loaded without them."""
    tmp, model_dir, _, _ = trained
    peft_adapter(model_dir, tmp / f"with_{target}", dict(r=4, lora_alpha=8, target_modules=["q_proj", target]))
    config = write_config(tmp, model_dir, tmp / "food", adapter={"targets": ["q_proj"],
                                                                  "init_from": str(tmp / f"with_{target}")},
                          run={"steps": 1, "eval_every": 0, "output_dir": str(tmp / f"with_{target}_run")})
    assert main(["train", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after transformers' progress bars
    assert "adapter_model.safetensors holds" in err and f"{target}." in err, err
    assert "besides the LoRA of the adapted projections" in err and "this run adapts q_proj (adapter.targets" in err
    assert main(["check", str(config)]) == 2  # from the header alone, in the same words
    assert capsys.readouterr().err.strip().splitlines()[-1] == err


@pytest.mark.parametrize("init", ["gaussian", "eva", "lora_ga", "orthogonal"])
def test_initialisations_that_leave_the_base_unchanged_are_read(trained, init):
    """Adapters saved after these initialisations load onto an unchanged base in PeftModel, so
    prge starts from them (their logits equal PeftModel's)."""
    import prge
    from prge.adapters import load_peft

    from peft import PeftModel

    tmp, model_dir, _, ids = trained
    source = tmp / f"init_{init}"
    peft_adapter(model_dir, source, dict(r=4, lora_alpha=8, target_modules=ALL))
    config = json.loads((source / "adapter_config.json").read_text())
    (source / "adapter_config.json").write_text(json.dumps({**config, "init_lora_weights": init}))
    peft_model = PeftModel.from_pretrained(hf_model(model_dir), str(source)).eval()
    native = prge.CausalLM.from_pretrained(str(model_dir))
    options = prge.AdapterOptions(rank=4, alpha=8)
    native.attach_adapters(options)
    load_peft(native, source, options)
    with torch.no_grad():
        assert_same_logits(native.logits(ids), peft_model(ids).logits)


def test_an_out_under_a_file_is_named_before_anything_is_written(trained, capsys):
    tmp, _, _, _ = trained
    (tmp / "a_file").write_text("mine")
    assert main(["adapters", "export", str(tmp / "run"), "--out", str(tmp / "a_file" / "sub")]) == 2
    assert f"prge: error: --out: {tmp / 'a_file' / 'sub'}: {tmp / 'a_file'} is a file" in capsys.readouterr().err
    assert (tmp / "a_file").read_text() == "mine"

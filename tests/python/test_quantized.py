"""Quantized frozen weights: GGUF blocks repacked exactly; a quantized model computes the
logits of the same model with its weights dequantized; LoRA-FA estimators train on it, MeZO is
refused by name; adapters leave it as peft reads them."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import prge
from conftest import make_batch, make_hf_llama
from installed import installed_module

gguf = installed_module("gguf", "pip install gguf")


def random_blocks(kind: str, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Random bytes of `kind` blocks [rows, bytes per row] whose fp16 scales are finite."""
    from prge.models.gguf_blocks import BLOCK_BYTES

    g = np.random.default_rng(seed)
    size = BLOCK_BYTES[kind]
    per_block = 256 if kind.endswith("_K") else 32
    blocks = g.integers(0, 256, size=(rows, cols // per_block, size), dtype=np.uint8)
    half = lambda n: g.uniform(0.01, 0.2, size=(rows, cols // per_block, n)).astype("<f2").view(np.uint8)  # noqa: E731
    if kind in ("Q8_0", "Q4_0", "Q5_0"):
        blocks[..., 0:2] = half(1)
    elif kind == "Q4_1":
        blocks[..., 0:4] = half(2)
    elif kind == "Q4_K":
        blocks[..., 0:4] = half(2)
    else:  # Q6_K: d last
        blocks[..., 208:210] = half(1)
    return blocks.reshape(rows, -1)


@pytest.mark.parametrize("kind", ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q4_K", "Q6_K"])
def test_gguf_blocks_repack_exactly(kind):
    """Repacked codes and float32 scales give gguf's own dequantization bit for bit, in numpy
    and through the C++ dequantization the model runs."""
    from prge.models.gguf_blocks import dequantize, repack

    rows, cols = 6, 512
    data = random_blocks(kind, rows, cols)
    expected = gguf.quants.dequantize(data, gguf.GGMLQuantizationType[kind]).reshape(rows, cols)
    bits, group, q, scales, offsets = repack(kind, data, rows, cols)
    np.testing.assert_array_equal(dequantize(bits, group, q, scales, offsets), expected)
    model_weight = prge.quantized_weight_dequantize(
        torch.from_numpy(q), torch.from_numpy(scales), None if offsets is None else torch.from_numpy(offsets),
        bits, group, rows, cols)
    np.testing.assert_array_equal(model_weight.numpy(), expected)


def dense_twin(quantized, path, tmp_path):
    """A dense checkpoint of the quantized model's dequantized weights (the reference)."""
    out = tmp_path / "dense"
    out.mkdir()
    tensors = {name: t.contiguous() for name, t in quantized.full_parameters()}
    save_file(tensors, str(out / "model.safetensors"))
    (out / "config.json").write_text((path / "config.json").read_text())
    return prge.CausalLM.from_pretrained(str(out))


@pytest.mark.parametrize("quantize,group", [("int8", 0), ("int8", 16), ("int4", 16), ("int4", 48)])
def test_a_quantized_model_computes_its_dequantized_twins_logits(tmp_path, quantize, group):
    path, hf = make_hf_llama(tmp_path)
    dense = prge.CausalLM.from_pretrained(str(path))
    model = prge.CausalLM.from_pretrained(str(path), quantize=quantize, group_size=group)
    assert model.quantized and model.projection_bytes < dense.projection_bytes / (3 if quantize == "int8" else 3.5)
    ids = torch.randint(0, 128, (3, 20), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model.logits(ids), dense_twin(model, path, tmp_path).logits(ids), rtol=1e-5, atol=1e-5)
    # Round to nearest stays near the original weights.
    error = (model.logits(ids) - dense.logits(ids)).abs().max().item() / dense.logits(ids).abs().max().item()
    assert error < (0.02 if quantize == "int8" else 0.2)


@pytest.mark.parametrize("kind", ["prge", "fzoo", "first_order"])
def test_lora_fa_estimators_train_on_a_quantized_base_and_mezo_is_refused(tmp_path, kind):
    path, _ = make_hf_llama(tmp_path)
    model = prge.CausalLM.from_pretrained(str(path), quantize="int4", group_size=16)
    model.attach_adapters(prge.AdapterOptions(rank=4, alpha=8))
    twin = dense_twin(model, path, tmp_path)
    twin.attach_adapters(prge.AdapterOptions(rank=4, alpha=8))
    queries = 1 if kind == "first_order" else 2
    trainers = [prge.Trainer(m, prge.EstimatorOptions(kind, queries, 1e-2), prge.OptimizerOptions(lr=1e-2), 3)
                for m in (model, twin)]
    for s in range(3):
        a, b = (t.step(make_batch(128, seed=s)) for t in trainers)
        assert a.losses == pytest.approx(b.losses, rel=1e-5)
    b_q = torch.cat([x["lora_b"].flatten() for x in model.adapters()])
    b_d = torch.cat([x["lora_b"].flatten() for x in twin.adapters()])
    assert b_q.abs().max() > 0 and torch.allclose(b_q, b_d, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="mezo perturbs and updates every weight.*quantized"):
        prge.Trainer(prge.CausalLM.from_pretrained(str(path), quantize="int8"),
                     prge.EstimatorOptions("mezo", 1, parallel="sequential"),
                     prge.OptimizerOptions(), 0)


def test_bad_quantization_settings_are_named(tmp_path):
    path, _ = make_hf_llama(tmp_path)
    with pytest.raises(RuntimeError, match="group size 7 does not divide 48 columns"):
        prge.CausalLM.from_pretrained(str(path), quantize="int4", group_size=7)
    with pytest.raises(ValueError, match="quantize: none, dense, int8 or int4"):
        prge.CausalLM.from_pretrained(str(path), quantize="int3")
    for text, words in (("model: {quantize: nf4}", "model.quantize"),
                        ("model: {group_size: 32}", "model.group_size")):
        with pytest.raises(prge.ConfigError, match=words):
            prge.parse_run_config(text, "test.yaml")
    assert "quantize: int4" in prge.parse_run_config("model: {quantize: int4, group_size: 32}").to_yaml()


def test_prge_check_names_a_group_size_the_projections_cannot_take(tmp_path, capsys):
    """prge check reads no weights, yet finds what loading would: a group size that does not
    divide a projection's input columns (the tiny model's hidden_size 48, intermediate_size 96)."""
    from prge.cli import main

    path, _ = make_hf_llama(tmp_path)
    config = tmp_path / "q.yaml"
    for group, bad in ((32, "48 input columns of the q/k/v and gate/up projections (hidden_size)"), (16, None),
                       (0, None)):
        config.write_text(f"model: {{name: {path}, quantize: int8, group_size: {group}}}\n" if group else
                          f"model: {{name: {path}, quantize: int8}}\n")
        assert main(["check", str(config)]) == (2 if bad else 0)
        err = capsys.readouterr().err
        if bad:
            assert f"prge: error: {config}:1:" in err and f"model.group_size: group size {group} does not divide the {bad}" in err
    config.write_text(f"model: {{name: {path}, quantize: int4, group_size: 96}}\n")  # divides 96, not 48
    assert main(["check", str(config)]) == 2 and "does not divide the 48 input columns" in capsys.readouterr().err


def test_smollm2_keeps_its_q4_1_weights_and_computes_the_dequantized_logits():
    """The default model loads its GGUF's Q4_1 blocks as shipped; its logits equal the dense
    (dequantize-at-load) path's to float32 rounding."""
    from installed import registered_model

    path = registered_model("smollm2-135m")
    quantized = prge.CausalLM.from_pretrained(str(path))
    dense = prge.CausalLM.from_pretrained(str(path), quantize="dense")
    assert quantized.quantized and not dense.quantized
    assert quantized.projection_bytes < dense.projection_bytes / 5
    ids = torch.randint(0, 49152, (2, 24), generator=torch.Generator().manual_seed(0))
    expected = dense.logits(ids)
    assert (quantized.logits(ids) - expected).abs().max().item() <= 1e-5 * expected.abs().max().item()
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "llama"



def test_adapters_of_a_run_on_a_quantized_base(tmp_path, capsys):
    """The exported PEFT adapter is the same whatever the base's format, and says how the base
    held its weights; --merge dequantizes the base, says so, and loads in transformers with prge's
    logits."""
    from safetensors import safe_open
    from transformers import LlamaForCausalLM

    from conftest import make_tiny_assets, write_config
    from prge.adapters import load_run
    from prge.cli import main

    model_dir, data_dir = make_tiny_assets(tmp_path)
    config = write_config(tmp_path, model_dir, data_dir, model={"quantize": "int4", "group_size": 16},
                          optimizer={"lr": 0.5}, run={"steps": 3, "eval_every": 0})
    assert main(["train", str(config), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["quantize"], summary["group_size"]) == ("int4", 16)
    assert main(["adapters", "export", str(tmp_path / "run"), "--out", str(tmp_path / "peft")]) == 0
    with safe_open(str(tmp_path / "peft" / "adapter_model.safetensors"), "pt") as f:
        assert f.metadata()["prge.base_weights"] == "int4, group_size 16"
    assert main(["adapters", "export", str(tmp_path / "run"), "--out", str(tmp_path / "merged"), "--merge"]) == 0
    assert "the merged model holds them dequantized" in capsys.readouterr().out
    _, _, model = load_run(tmp_path / "run")
    assert model.quantized
    ids = torch.randint(1, 15, (2, 9), generator=torch.Generator().manual_seed(3))
    merged = LlamaForCausalLM.from_pretrained(str(tmp_path / "merged"), dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, model.logits(ids), rtol=1e-4, atol=1e-4)


def checkpoint_storing_quantized_blocks(tmp_path):
    """A tiny Llama whose projection weights are also stored quantized beside model.safetensors,
    as prge's GGUF conversion of the default model stores them (int4 groups of 16 here)."""
    from safetensors.torch import load_file

    path, _ = make_hf_llama(tmp_path)
    stored = {}
    for name, weight in load_file(str(path / "model.safetensors")).items():
        if name.endswith("proj.weight"):
            q = prge.quantize_weight(weight, 4, 16)
            stored.update({f"{name}.qweight": q.qweight, f"{name}.scales": q.scales, f"{name}.offsets": q.offsets,
                           f"{name}.format": torch.tensor([4, 16], dtype=torch.int64)})
    save_file(stored, str(path / prge.QUANTIZED_WEIGHTS_FILE))
    assert prge.CausalLM.from_pretrained(str(path)).quantized
    return path


@pytest.mark.parametrize("quantize,group", [("int8", 0), ("int4", 24)])
def test_int8_and_int4_on_a_checkpoint_with_its_own_blocks_quantize_its_dense_copy_as_asked(tmp_path, capsys,
                                                                                         quantize, group):
    """model.quantize int8 / int4 quantize the dequantized copy at load, exactly as on the same
    checkpoint without its blocks, and say so; only 'none' keeps the blocks as stored."""
    import shutil

    from prge.setup import weight_format

    path = checkpoint_storing_quantized_blocks(tmp_path / "stored")
    plain = tmp_path / "plain"
    shutil.copytree(path, plain)
    (plain / prge.QUANTIZED_WEIGHTS_FILE).unlink()
    ids = torch.randint(1, 100, (2, 9), generator=torch.Generator().manual_seed(3))
    asked = prge.CausalLM.from_pretrained(str(path), quantize=quantize, group_size=group)
    expected = prge.CausalLM.from_pretrained(str(plain), quantize=quantize, group_size=group)
    assert asked.quantized and asked.projection_bytes == expected.projection_bytes
    assert torch.equal(asked.logits(ids), expected.logits(ids))
    as_stored = prge.CausalLM.from_pretrained(str(path))
    assert as_stored.projection_bytes != asked.projection_bytes and not torch.equal(as_stored.logits(ids),
                                                                                    asked.logits(ids))
    config = prge.parse_run_config(f"model: {{quantize: {quantize}, group_size: {group}}}\n")
    assert weight_format(config, path) == quantize
    assert (f"model.quantize: {quantize} quantizes {path.name}'s dequantized copy again at load"
            in capsys.readouterr().err)
    assert weight_format(config, plain) == quantize and capsys.readouterr().err == ""


def test_prge_check_prints_the_weight_format_notes_training_prints(tmp_path, capsys):
    """prge check says, as prge train does before its first step, that MeZO loads a checkpoint's
    own quantized blocks dense and that int8 re-quantizes their dequantized copy; 'none' under
    P-RGE keeps them as shipped and gets no note."""
    from prge.cli import main

    path = checkpoint_storing_quantized_blocks(tmp_path / "stored")
    config = tmp_path / "c.yaml"
    for settings, note in (("model: {{name: {p}}}\nestimator: {{kind: mezo, parallel: sequential}}\n"
                            "optimizer: {{lr: 1.0e-6}}\n", "loaded dequantized (as model.quantize: dense)"),
                           ("model: {{name: {p}, quantize: int8}}\n", f"model.quantize: int8 quantizes {path.name}'s"),
                           ("model: {{name: {p}}}\n", None)):
        config.write_text(settings.format(p=path))
        assert main(["check", str(config)]) == 0
        err = capsys.readouterr().err
        assert (note in err) if note else "[prge] note" not in err, err


def test_a_damaged_quantized_block_names_its_file(tmp_path):
    """The quantized blocks beside model.safetensors live in a file of their own: a NaN scale
    names it, as a bad weight of a sharded checkpoint names its shard."""
    from safetensors.torch import load_file

    path = checkpoint_storing_quantized_blocks(tmp_path)
    stored = load_file(str(path / prge.QUANTIZED_WEIGHTS_FILE))
    name = next(n for n in stored if n.endswith(".scales"))
    stored[name][0, 0] = float("nan")
    save_file(stored, str(path / prge.QUANTIZED_WEIGHTS_FILE))
    with pytest.raises(RuntimeError, match=rf"non-finite scales or offsets \(in {prge.QUANTIZED_WEIGHTS_FILE}\)$"):
        prge.CausalLM.from_pretrained(str(path))


def _dense_name_added(stored):
    stored["model.embed_tokens.weight"] = torch.zeros(3, 3)
    return r"tensor 'model.embed_tokens.weight' is not part of a quantized projection \(a projection weight's NAME.qweight"


def _norm_block_added(stored):  # passes for a block by its suffix, but names no projection
    stored["model.norm.weight.qweight"] = torch.zeros(3, 3, dtype=torch.int8)
    return rf"{prge.QUANTIZED_WEIGHTS_FILE}: tensor 'model.norm.weight.qweight' is not part of a quantized projection"


def _offsets_removed(stored):
    stored.pop(next(n for n in stored if n.endswith(".offsets")))
    return (r"4-bit codes need their .offsets \(the codes are unsigned\), and there are none "
            rf"\(in {prge.QUANTIZED_WEIGHTS_FILE}\)$")


def _codes_removed(stored):  # its scales, offsets and format are left over
    stored.pop(next(n for n in stored if n.endswith(".qweight")))
    return rf"unexpected weight '.*proj.weight.(format|offsets|scales)' .*\(in {prge.QUANTIZED_WEIGHTS_FILE}\)$"


@pytest.mark.parametrize("edit", [_dense_name_added, _norm_block_added, _offsets_removed, _codes_removed])
def test_a_quantized_weights_file_holding_what_it_should_not_is_named(tmp_path, edit):
    """prge's quantized-weights file holds only projections' blocks: a dense tensor there would
    silently stand in for model.safetensors' own, a 4-bit block without offsets would read every
    weight as >= 0, and a block's parts without its codes are leftovers; each is refused naming
    the file, never loaded."""
    from safetensors.torch import load_file

    path = checkpoint_storing_quantized_blocks(tmp_path)
    stored = load_file(str(path / prge.QUANTIZED_WEIGHTS_FILE))
    message = edit(stored)
    save_file(stored, str(path / prge.QUANTIZED_WEIGHTS_FILE))
    with pytest.raises(RuntimeError, match=message):
        prge.CausalLM.from_pretrained(str(path))


@pytest.mark.parametrize("quantize", ["int8", "int4"])
def test_prge_check_refuses_mezo_on_projections_quantized_at_load(tmp_path, capsys, quantize):
    """The trainer refuses MeZO on a quantized base; prge check says so first, naming the key,
    instead of a note about keeping blocks as shipped."""
    from prge.cli import main

    path, _ = make_hf_llama(tmp_path)
    config = tmp_path / "c.yaml"
    config.write_text(f"model: {{name: {path}, quantize: {quantize}, group_size: 16}}\n"
                      "estimator: {kind: mezo, parallel: sequential}\noptimizer: {lr: 1.0e-6}\n")
    assert main(["check", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"prge: error: {config}:1:" in err and f"model.quantize: {quantize} with estimator.kind: mezo" in err, err
    # prge train says the same before loading anything, even where the group size would not fit
    config.write_text(config.read_text().replace("group_size: 16", "group_size: 7"))
    assert main(["train", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"prge: error: {config}:1:" in err and f"model.quantize: {quantize} with estimator.kind: mezo" in err, err


SHIPPED = Path(__file__).resolve().parents[2] / "configs"


def test_every_shipped_run_builds_its_trainer_on_a_base_stored_quantized(tmp_path, capsys):
    """Each run of every config and sweep in configs/ sets up its model and trainer on a checkpoint
    that stores its projections quantized, as the default model's does: full-parameter MeZO loads
    those dequantized and says so; the LoRA-FA runs keep them quantized (unless the run says dense)."""
    from prge.setup import setup_model
    from prge.sweep import expand_sweep

    path = checkpoint_storing_quantized_blocks(tmp_path)
    runs = [(p.name, prge.load_run_config(str(p))) for p in sorted(SHIPPED.glob("*.yaml"))]
    for sweep in sorted((SHIPPED / "sweeps").glob("*.yaml")):
        runs += [(f"{sweep.name} [{label}]", config) for label, config in expand_sweep(sweep, output_root=str(tmp_path))]
    assert len(runs) > 50 and any(config.estimator.kind == "mezo" for _, config in runs)
    for label, config in runs:
        model = setup_model(config, model_dir=path, device="cpu")
        prge.Trainer(model, config.estimator, config.optimizer, config.run.seed)  # raises if it cannot train
        mezo = config.estimator.kind == "mezo"
        assert model.quantized == (not mezo and config.model.quantize != "dense"), label
        assert ("mezo perturbs every weight" in capsys.readouterr().err) == mezo, label


@pytest.mark.parametrize("kind,quantize,loads", [
    ("mezo", "none", "dense"), ("mezo", "int4", "int4"), ("mezo", "dense", "dense"),
    ("prge", "none", "none"), ("prge", "int8", "int8"), ("first_order", "none", "none")])
def test_the_quantize_loading_uses_is_one_rule(kind, quantize, loads):
    """RunConfig.load_quantize: only full-parameter MeZO under 'none' loads dense (an explicit
    int4 with MeZO is kept, to be refused by the trainer by name)."""
    from prge import run_summary

    config = prge.parse_run_config(f"model: {{quantize: {quantize}}}\nestimator: {{kind: {kind}}}\n")
    assert config.load_quantize == loads
    identity = run_summary.identity(config, mode="train")  # what summary.json records
    assert identity["quantize"] == loads
    assert identity["group_size"] == (config.model.effective_group_size if loads in ("int8", "int4") else None)


def test_the_cpp_prge_train_trains_mezo_on_a_base_stored_quantized(tmp_path):
    """prge_train (no Python) reads the same rule: MeZO on a checkpoint keeping its projections
    quantized loads them dense and steps; an explicit int4 with MeZO is refused by name."""
    import subprocess

    path = checkpoint_storing_quantized_blocks(tmp_path)
    binary = Path(prge._core.__file__).parent / "bin" / "prge_train"  # installed beside the extension
    for quantize, ok in (("none", True), ("int4", False)):
        config = tmp_path / f"mezo_{quantize}.yaml"
        group = ", group_size: 16" if quantize == "int4" else ""  # the tiny model's 48 columns
        config.write_text(f"model: {{quantize: {quantize}{group}}}\nestimator: {{kind: mezo, parallel: sequential}}\n"
                          "data: {batch_size: 2, max_length: 8}\nrun: {steps: 2}\n")
        done = subprocess.run([str(binary), str(config), str(path)], capture_output=True, text=True, timeout=300)
        if ok:
            assert done.returncode == 0, done.stderr
            assert done.stdout.count("loss") == 2 and "# mezo: a checkpoint's own quantized blocks" in done.stdout
        else:
            assert done.returncode == 1 and "mezo" in done.stderr.lower() and "int4" in done.stderr, done.stderr


@pytest.mark.parametrize("model,stored", [
    ("{quantize: int4}", "int4, group_size 64"),  # unset: the 64 weight_format uses
    ("{quantize: int4, group_size: 32}", "int4, group_size 32"),
    ("{quantize: int8}", "int8, one scale per output channel"),
    ("{quantize: int8, group_size: 16}", "int8, group_size 16"),
])
def test_the_reported_group_size_is_the_one_quantizing_used(tmp_path, model, stored):
    """The adapter's metadata and `prge check` report the group size the load used, never a
    'default'; with group_size unset, int4's groups are what the loader applies (its error on a
    48-column model names them)."""
    from types import SimpleNamespace

    from prge.adapters import base_weights_metadata

    config = prge.parse_run_config(f"model: {model}\n")
    held = base_weights_metadata(config, SimpleNamespace(quantized=True))["prge.base_weights"]
    assert held == stored
    if config.model.quantize == "int4" and config.model.group_size == 0:
        path, _ = make_hf_llama(tmp_path)
        with pytest.raises(RuntimeError, match=f"group size {config.model.effective_group_size} does not divide 48"):
            prge.CausalLM.from_pretrained(str(path), quantize="int4")

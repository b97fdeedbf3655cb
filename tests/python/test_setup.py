"""One setup (prge.setup: setup_data, setup_model) behind every entry point: `prge export` and
`prge train --runtime` start from adapter.init_from and render prompts with the chat template
exactly as `prge train` does (both were silently dropped there before), and so do speed sweeps."""
import json

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

import prge
from conftest import make_tiny_assets
from installed import installed_module
from prge.cli import main

PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# Ends every rendered prompt with the word 'hate' (a token of the word-level vocabulary).
CHAT = "{{ messages[0]['content'] }}{% if add_generation_prompt %} hate{% endif %}"


def write_peft_adapter(out, model_dir, rank=4, alpha=8):
    """A PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors) with random A and B
    for every projection; returns {prge adapter name: B}."""
    from prge.adapters import PEFT_PREFIX, module_names

    model = prge.CausalLM.from_pretrained(str(model_dir))
    model.attach_adapters(prge.AdapterOptions(rank=rank, alpha=alpha))
    modules, tensors, b = module_names(model.spec), {}, {}
    g = torch.Generator().manual_seed(3)
    for a in model.adapters():
        module = PEFT_PREFIX + modules[a["name"]]
        tensors[f"{module}.lora_A.weight"] = torch.randn(a["lora_a"].shape, generator=g)
        b[a["name"]] = tensors[f"{module}.lora_B.weight"] = 0.1 * torch.randn(a["lora_b"].shape, generator=g)
    out.mkdir(parents=True)
    save_file(tensors, str(out / "adapter_model.safetensors"))
    (out / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": rank, "lora_alpha": alpha,
                                                         "target_modules": PROJECTIONS}))
    return b


@pytest.fixture
def run(tmp_path):
    """A custom classification task with data.chat_template: true, starting from a PEFT adapter,
    in a config `prge export` and `prge train --runtime` accept."""
    model_dir, data_dir = make_tiny_assets(tmp_path)
    (model_dir / "chat_template.jinja").write_text(CHAT)
    start_b = write_peft_adapter(tmp_path / "start", model_dir)
    config = {
        "model": {"name": str(model_dir)},
        "adapter": {"rank": 4, "alpha": 8, "init_from": str(tmp_path / "start")},
        "estimator": {"kind": "prge", "queries": 2, "parallel": "dual", "rng": "counter"},
        "optimizer": {"lr": 1e-6},
        "data": {"task": "custom", "train_file": str(data_dir / "train.csv"), "eval_file": str(data_dir / "test.csv"),
                 "template": "Review : {review} Sentiment :", "label_field": "score",
                 "label_words": {"great": " positive", "other": " negative"}, "chat_template": True,
                 "train_examples": 40, "eval_examples": 16, "batch_size": 4, "max_length": 16},
        "run": {"steps": 2, "seed": 1, "eval_every": 0, "log_every": 1, "output_dir": str(tmp_path / "run")},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return tmp_path, path, model_dir, start_b


def test_setup_model_starts_from_init_from_and_renders_with_the_chat_template(run):
    from prge.setup import setup_data, setup_model
    from prge.speed import build_model

    tmp_path, path, model_dir, start_b = run
    config = prge.load_run_config(str(path))
    data = setup_data(config)
    hate = data.tokenizer.tokenizer.convert_tokens_to_ids("hate")
    assert all(e.prompt_ids[-1] == hate for e in data.train + data.eval)  # the chat template's generation prompt
    for model in (setup_model(config, data), build_model(config, None)):  # train / export / runtime; speed sweeps
        for a in model.adapters():
            torch.testing.assert_close(a["lora_b"], start_b[a["name"]], rtol=0, atol=0)


def test_export_starts_from_init_from_and_exports_the_chat_rendered_batches(run):
    installed_module("onnxruntime", "pip install onnxruntime")
    installed_module("onnxscript", "pip install onnxscript")
    from prge.data.batching import BatchSampler
    from prge.export.run_data import pad_to
    from prge.setup import setup_data

    tmp_path, path, model_dir, start_b = run
    out = tmp_path / "export"
    assert main(["export", str(path), "--runtime", "onnx", "--out", str(out)]) == 0
    manifest = json.loads((out / "export.json").read_text())
    initial = load_file(str(out / "initial_b.safetensors"))
    assert len(manifest["adapters"]) == len(start_b) == len(initial)
    for i, name in enumerate(manifest["adapters"]):
        torch.testing.assert_close(initial[f"b_{i}"], start_b[name], rtol=0, atol=0)
    # the exported batches are `prge train`'s: the same setup, sampler and encoder
    config = prge.load_run_config(str(path))
    data = setup_data(config)
    sampler = BatchSampler(len(data.train), config.data.batch_size, config.run.seed)
    batches = load_file(str(out / "batches.safetensors"))
    hate = data.tokenizer.tokenizer.convert_tokens_to_ids("hate")
    for step in range(config.run.steps):
        ids, targets = pad_to(data.encoder.batch([data.train[i] for i in sampler.next()]), config.data.max_length)
        assert torch.equal(batches["input_ids"][step], ids) and torch.equal(batches["targets"][step], targets)
        first_target = (targets != -100).int().argmax(1)
        assert (ids[torch.arange(ids.shape[0]), first_target] == hate).all()  # predicted right after 'hate'


def test_train_through_a_runtime_starts_from_init_from(run):
    installed_module("onnxruntime", "pip install onnxruntime")
    installed_module("onnxscript", "pip install onnxscript")
    tmp_path, path, model_dir, start_b = run
    assert main(["train", str(path), "--runtime", "onnx", "--no-progress"]) == 0
    trained = load_file(str(tmp_path / "run" / "trained.safetensors"))
    for name, b in start_b.items():  # two steps at lr 1e-6 move B by far less than its size (0.1)
        assert (trained[f"{name}.lora_b"] - b).abs().max().item() < 1e-3
    assert max(b.abs().max().item() for b in start_b.values()) > 0.1


def test_model_fold_lora_a_folds_the_model_every_entry_point_builds(run, capsys):
    """model.fold_lora_a: true reaches the model prge train and speed sweeps build (A stacked
    under W, B still init_from's), changes the logits only by GEMM rounding, is written back into
    the run's config, is refused by name where there are no adapters to fold, and is reported
    where it folds nothing (a quantized base) or serves evaluation only (first order)."""
    from prge.setup import setup_data, setup_model
    from prge.speed import build_model

    tmp_path, path, model_dir, start_b = run
    plain = prge.load_run_config(str(path))
    data = setup_data(plain)
    text = path.read_text().replace("model:\n", "model:\n  fold_lora_a: true\n", 1)
    folded_config = prge.parse_run_config(text, str(path))
    assert folded_config.model.fold_lora_a and "  fold_lora_a: true\n" in folded_config.to_yaml()
    assert "fold_lora_a:" not in plain.to_yaml()  # configs stored before the key read the same
    ids = torch.tensor([e.prompt_ids[:8] for e in data.train[:2]])
    reference = setup_model(plain, data)
    assert not reference.fold_lora_a and reference.lora_a_folded == []
    for model in (setup_model(folded_config, data), build_model(folded_config, None)):
        assert model.fold_lora_a and len(model.lora_a_folded) > 0
        for a in model.adapters():
            torch.testing.assert_close(a["lora_b"], start_b[a["name"]], rtol=0, atol=0)
        torch.testing.assert_close(model.logits(ids), reference.logits(ids), rtol=1e-5, atol=1e-5)
    capsys.readouterr()
    quantized = prge.parse_run_config(text.replace("model:\n", "model:\n  quantize: int8\n", 1), str(path))
    assert setup_model(quantized, data).lora_a_folded == []  # a quantized W does not fold, and prge says so
    assert "model.fold_lora_a: true folds nothing" in capsys.readouterr().err
    first_order = prge.parse_run_config(text.replace("kind: prge", "kind: first_order"), str(path))
    assert any("model.fold_lora_a: true with estimator.kind first_order" in w for w in first_order.warnings)
    mezo = text.replace("kind: prge", "kind: mezo").replace("parallel: dual", "parallel: sequential")
    mezo = "".join(line for line in mezo.splitlines(keepends=True) if "init_from:" not in line)  # refused for MeZO
    with pytest.raises(prge.ConfigError, match=r"run\.yaml:2:\d+: model\.fold_lora_a: true folds LoRA-FA's A under W"):
        prge.parse_run_config(mezo, str(path))


def test_model_gated_low_rank_kernel_reaches_every_entry_point_and_reads_as_written(run):
    """model.gated_low_rank_kernel defaults to true and is left out of a stored config (configs
    stored before the key read the same); false reaches the model prge train and speed sweeps
    build, is written back, and refuses a value that is not a boolean by file, line and key."""
    from prge.setup import setup_data, setup_model
    from prge.speed import build_model

    tmp_path, path, model_dir, start_b = run
    plain = prge.load_run_config(str(path))
    assert plain.model.gated_low_rank_kernel is True and "gated_low_rank_kernel" not in plain.to_yaml()
    data = setup_data(plain)
    assert setup_model(plain, data).gated_low_rank_kernel is True
    text = path.read_text().replace("model:\n", "model:\n  gated_low_rank_kernel: false\n", 1)
    off = prge.parse_run_config(text, str(path))
    assert off.model.gated_low_rank_kernel is False and "  gated_low_rank_kernel: false\n" in off.to_yaml()
    assert prge.parse_run_config(off.to_yaml(), str(path)).to_yaml() == off.to_yaml()
    for model in (setup_model(off, data), build_model(off, None)):
        assert model.gated_low_rank_kernel is False
    with pytest.raises(prge.ConfigError, match=r"run\.yaml:2:\d+: model\.gated_low_rank_kernel"):
        prge.parse_run_config(text.replace("gated_low_rank_kernel: false", "gated_low_rank_kernel: maybe"), str(path))

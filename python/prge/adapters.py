"""Trained adapters out of prge, and PEFT adapters in.

  export_peft(run_dir, out)    adapter_config.json + adapter_model.safetensors in PEFT's LoRA
                               format (the frozen random A saved beside the trained B), which
                               peft.PeftModel.from_pretrained loads onto transformers' model
  export_merged(run_dir, out)  a full Hugging Face model directory with (alpha / r) B A folded
                               into every adapted W (config, safetensors, tokenizer files)
  load_peft(model, dir, opts)  a PEFT LoRA adapter's A and B as a model's starting point
                               (adapter.init_from)

PEFT names a LoRA pair after the module it wraps:
base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight ([r, in]) and .lora_B.weight
([out, r]); its scaling is lora_alpha / r, as prge's is alpha / rank."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

PEFT_PREFIX = "base_model.model."
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                   "special_tokens_map.json", "generation_config.json")


def module_names(model) -> dict[str, str]:
    """prge adapter name (layers.N.q_proj) -> Hugging Face module (model.layers.N.self_attn.q_proj),
    read off the model's own parameter names."""
    out = {}
    for name, _ in model.full_parameters():
        parts = name.removesuffix(".weight").split(".")
        if len(parts) == 5 and parts[1] == "layers":  # model.layers.N.<block>.<projection>
            out[f"layers.{parts[2]}.{parts[4]}"] = ".".join(parts)
    return out


def load_run(run_dir: str | Path):
    """(config, model directory, model with the run's trained adapters) of a finished run."""
    from prge._core import LlamaModel, Trainer, load_run_config
    from prge.models import resolve_model

    run_dir = Path(run_dir)
    for needed in ("config.yaml", "trained.safetensors"):
        if not (run_dir / needed).is_file():
            raise FileNotFoundError(f"{run_dir}: no {needed} (a run directory of `prge train` holds both)")
    config = load_run_config(str(run_dir / "config.yaml"))
    if not config.use_adapter:
        raise ValueError(f"{run_dir}: the run trained full weights (estimator {config.estimator.kind}), "
                         "not adapters")
    model_dir = resolve_model(config.model.name)
    model = LlamaModel.from_pretrained(str(model_dir), "cpu", config.model.dtype)
    model.attach_adapters(config.adapter)
    if config.adapter.init_from:
        load_peft(model, config.adapter.init_from, config.adapter)
    Trainer(model, config.estimator, config.optimizer, config.run.seed).load_checkpoint(
        str(run_dir / "trained.safetensors"))
    return config, model_dir, model


def export_peft(run_dir: str | Path, out: str | Path) -> Path:
    config, model_dir, model = load_run(run_dir)
    modules = module_names(model)
    tensors = {}
    for a in model.adapters():
        module = PEFT_PREFIX + modules[a["name"]]
        tensors[f"{module}.lora_A.weight"] = a["lora_a"].detach().float().contiguous()
        tensors[f"{module}.lora_B.weight"] = a["lora_b"].detach().float().contiguous()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    adapter = config.adapter
    (out / ADAPTER_CONFIG).write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": str(model_dir),
        "r": adapter.rank, "lora_alpha": adapter.alpha, "target_modules": sorted(adapter.targets),
        "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
        "init_lora_weights": True, "use_rslora": False, "use_dora": False, "modules_to_save": None,
    }, indent=2))
    return out


def export_merged(run_dir: str | Path, out: str | Path) -> Path:
    config, model_dir, model = load_run(run_dir)
    modules = module_names(model)
    low_rank = {}
    for a in model.adapters():
        delta = a["scaling"] * (a["lora_b"].double() @ a["lora_a"].double())
        low_rank[modules[a["name"]] + ".weight"] = delta
    tensors = {}
    for name, weight in model.full_parameters():
        merged = weight.double() + low_rank[name] if name in low_rank else weight
        tensors[name] = merged.to(weight.dtype).contiguous()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    hf_config = json.loads((Path(model_dir) / "config.json").read_text())
    hf_config["torch_dtype"] = hf_config["dtype"] = config.model.dtype
    (out / "config.json").write_text(json.dumps(hf_config, indent=2))
    for name in TOKENIZER_FILES:
        if (Path(model_dir) / name).is_file():
            shutil.copy2(Path(model_dir) / name, out / name)
    return out


def load_peft(model, adapter_dir: str | Path, options) -> None:
    """Copy a PEFT LoRA adapter's A and B into a model whose adapters were attached with
    `options`; rank, alpha and targets must be the adapter's."""
    adapter_dir = Path(adapter_dir)
    key = "adapter.init_from"
    if not (adapter_dir / ADAPTER_CONFIG).is_file() or not (adapter_dir / ADAPTER_WEIGHTS).is_file():
        raise FileNotFoundError(f"{key}: {adapter_dir} has no {ADAPTER_CONFIG} + {ADAPTER_WEIGHTS} (a PEFT adapter)")
    peft = json.loads((adapter_dir / ADAPTER_CONFIG).read_text())
    if peft.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{key}: {adapter_dir} is a {peft.get('peft_type')} adapter; prge loads LoRA")
    targets = peft.get("target_modules") or []
    targets = sorted([targets] if isinstance(targets, str) else targets)
    for what, theirs, ours in (("r", peft.get("r"), options.rank), ("lora_alpha", peft.get("lora_alpha"), options.alpha),
                               ("target_modules", targets, sorted(options.targets))):
        if theirs != ours:
            raise ValueError(f"{key}: {adapter_dir} has {what} = {theirs}, the config's adapter section "
                             f"says {ours}: set adapter.rank / alpha / targets to match")
    tensors = load_file(str(adapter_dir / ADAPTER_WEIGHTS))
    modules = module_names(model)
    with torch.no_grad():
        for a in model.adapters():
            for part, slot in (("lora_A", "lora_a"), ("lora_B", "lora_b")):
                name = f"{PEFT_PREFIX}{modules[a['name']]}.{part}.weight"
                if name not in tensors:
                    raise ValueError(f"{key}: {adapter_dir / ADAPTER_WEIGHTS} has no tensor {name}")
                if tensors[name].shape != a[slot].shape:
                    raise ValueError(f"{key}: {name} has shape {tuple(tensors[name].shape)}, "
                                     f"the model expects {tuple(a[slot].shape)}")
                a[slot].copy_(tensors[name].to(a[slot].dtype))

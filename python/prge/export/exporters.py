"""`prge export CONFIG --runtime onnx|aoti|executorch`: the P-RGE step exported for an
inference runtime, with everything the runtime needs to fine-tune without Python.

An export directory holds:
  step.onnx | step.pt2 | step.pte   the training step (one forward pass = one P-RGE dual step)
  initial_b.safetensors    b_0 .. b_{P-1}: LoRA-FA B before training (adapter order)
  batches.safetensors      input_ids / targets [steps, b, T]: the run's training batches,
                           drawn exactly as `prge train` draws them
  export.json              runtime, files, lr, epsilon, seed, device, adapter names
The C++ runner (prge_run_exported DIR) and the Python runners (runners.py) read the same
directory. Step s uses the step key counter_step_key(seed, s), so runs match prge's C++ trainer
with `estimator.rng: counter`."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors.torch import save_file

from prge import durable
from prge._core import IGNORE_INDEX, CausalLM, RunConfig
from prge.export.run_data import RunData
from prge.export.step_module import FunctionalStep, MutableBufferStep, StepSpec
from prge.preflight import check_positions
from prge.setup import setup_model

RUNTIMES = ("onnx", "aoti", "executorch")
MODEL_FILES = {"onnx": "step.onnx", "aoti": "step.pt2", "executorch": "step.pte"}
_EXECUTORCH = "--no-deps executorch==1.5.1 (see scripts/install_deps.sh)"
# The packages beyond prge's own that a runtime needs, (import name, pip install argument):
# to export its step, and to run it from Python.
RUNTIME_PACKAGES = {
    "onnx": {"export": [("onnxscript", "onnxscript")], "run": [("onnxruntime", "onnxruntime")]},
    "aoti": {"export": [], "run": []},
    "executorch": {"export": [("executorch", _EXECUTORCH)], "run": [("executorch", _EXECUTORCH)]},
}


def check_installed(runtime: str, run: bool = False) -> None:
    """ImportError naming the `pip install` that exporting (and with `run`, running) the step
    for `runtime` still needs, before anything is loaded or written."""
    import importlib.util

    needed = RUNTIME_PACKAGES[runtime]["export"] + (RUNTIME_PACKAGES[runtime]["run"] if run else [])
    missing = list(dict.fromkeys(pip for module, pip in needed if importlib.util.find_spec(module) is None))
    if missing:
        raise ImportError(f"--runtime {runtime}: {'training through' if run else 'exporting for'} it needs "
                          + " and ".join(f"pip install {pip}" for pip in missing))


def model_spec(config: RunConfig):
    """(ArchSpec, model directory) of the config's model: its config.json read through the family
    registry (a registered name or .gguf file converted into the cache first)."""
    from prge._core import ArchSpec
    from prge.models import config_model_dir

    model_dir = config_model_dir(config)
    return ArchSpec.from_json_file(str(model_dir / "config.json")), model_dir


def unexported_features(config: RunConfig, spec=None) -> list[str]:
    """What the model's family has that the exported step (step_module.py: a Llama block) does
    not compute, read from its config.json through the family registry (`spec`: model_spec's)."""
    spec = spec or model_spec(config)[0]
    features = {
        "biases": spec.qkv_bias or spec.o_bias or spec.mlp_bias, "q/k norms": spec.qk_norm,
        "Gemma's norms": spec.norm == "gemma" or spec.sandwich_norms, "an embedding scale": spec.scale_embeddings,
        "sliding windows shorter than data.max_length": any(0 < w < config.data.max_length for w, _ in spec.layers),
        "partial rotary embeddings": spec.partial_rotary_factor != 1.0, "fused checkpoint tensors": spec.fused_checkpoint,
        "logit soft-capping": spec.final_logit_softcapping > 0, "GeGLU": spec.activation != "silu",
        "two RoPE sets": len(spec.ropes) > 1,
        # its tables are built once for data.max_length; the C++ trainer's per batch length picks
        # the short factors for batches up to original_max_position_embeddings
        "LongRoPE switching factors below data.max_length": any(
            r.type == "longrope" and r.original_max_position_embeddings < config.data.max_length for r in spec.ropes),
    }
    return [f"model_type '{spec.model_type}' has {name}, which the exported step does not compute (train it with "
            "the C++ trainer)" for name, present in features.items() if present]


def check_exportable(config: RunConfig, runtime: str, run: bool = False) -> None:
    """ValueError listing what of the config the exported step cannot express (or, with `run`,
    the runtime loop would not do); ImportError for a package the runtime needs (check_installed)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime '{runtime}' (allowed: {', '.join(RUNTIMES)})")
    check_installed(runtime, run)
    spec, model_dir = model_spec(config)
    check_positions(config, SimpleNamespace(spec=spec), model_dir)  # as prge train refuses it
    e, o = config.estimator, config.optimizer
    problems = []
    if e.kind != "prge" or e.parallel != "dual" or e.difference != "central":
        problems.append(f"estimator must be prge / dual / central (got {e.kind} / {e.parallel} / {e.difference})")
    if e.rng == "torch":  # auto means counter for a runtime: the only RNG one can run
        problems.append("estimator.rng must be 'counter' or 'auto' (the integer-op RNG a runtime can run)")
    if o.kind != "sgd" or o.momentum or o.weight_decay or o.schedule != "constant" or o.warmup_steps or o.accumulate != 1:
        problems.append("optimizer must be plain sgd (kind: sgd, momentum and weight_decay 0, schedule: constant, "
                        "no warmup_steps, accumulate: 1): the exported step fuses that update")
    if config.data.task == "custom" and config.data.response_field:
        problems.append("the exported step scores label words: train generation tasks with the C++ trainer")
    if not config.use_adapter:
        problems.append("LoRA-FA adapters are required (adapter: null given)")
    if config.model.dtype != "float32":
        problems.append(f"model.dtype must be float32 (got {config.model.dtype}): the exported step holds its weights "
                        "and B in float32")
    if config.data.protocol != "paper":
        problems.append("data.protocol must be paper: the runtime loop evaluates before and after on the test split "
                        "(mezo's choice of the best dev checkpoint is the C++ trainer's)")
    for key, default in (("data_parallel", 1), ("eval_every", 0)):
        if (value := getattr(config.run, key)) != default:
            key = f"run.{key}"
            problems.append(f"{key}: {value} is the C++ trainer's (the runtime loop runs one process and evaluates "
                            "before and after only): leave it at its default")
    if runtime == "executorch" and config.run.checkpoint_every:
        problems.append(f"run.checkpoint_every: {config.run.checkpoint_every}: a run through executorch cannot continue "
                        "from a checkpoint (its Python bindings cannot set the program's B): leave it at 0")
    if runtime in ("onnx", "executorch") and config.model.device != "cpu":
        problems.append(f"the {runtime} runner runs on the CPU: set model.device: cpu")
    problems += unexported_features(config, spec)
    if problems:
        raise ValueError("cannot export this config: " + "; ".join(problems))


def example_inputs(step, lr: float = 1e-3, epsilon: float = 1e-2, step_key: int = 0):
    s = step.spec
    device = step.coordinates.device
    ids = torch.ones(s.batch_size, s.seq_len, dtype=torch.int64, device=device)
    targets = torch.full((s.batch_size, s.seq_len), IGNORE_INDEX, dtype=torch.int64, device=device)
    targets[:, -1] = 1
    return (ids, targets, torch.tensor(lr, dtype=torch.float32, device=device),
            torch.tensor(epsilon, dtype=torch.float32, device=device),
            torch.tensor(step_key, dtype=torch.int64, device=device))


def export_onnx(step: FunctionalStep, path: str | Path) -> Path:
    """ONNX through torch.onnx's dynamo exporter. The onnxscript graph optimizer is off: on a
    30-layer model it ran for over ten minutes (ONNX Runtime optimises the graph at load)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    b_inputs = tuple(step.initial_inputs())
    names = ["input_ids", "targets", "lr", "epsilon", "step_key"] + [f"b_{i}" for i in range(len(b_inputs))]
    outputs = ["loss", "projected_grads"] + [f"b_{i}_updated" for i in range(len(b_inputs))]
    with torch.no_grad():
        program = torch.onnx.export(step, example_inputs(step) + b_inputs, dynamo=True,
                                    input_names=names, output_names=outputs, optimize=False,
                                    external_data=False)
    program.save(str(path))
    return path


def export_program(step: MutableBufferStep):
    with torch.no_grad():
        return torch.export.export(step, example_inputs(step), strict=False)


def export_aoti(step: MutableBufferStep, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    program = export_program(step)
    with torch.no_grad():
        return Path(torch._inductor.aoti_compile_and_package(program, package_path=str(path)))


def export_executorch(step: MutableBufferStep, path: str | Path) -> Path:
    if step.spec.shift_mode != "divide":
        raise ValueError("ExecuTorch's core ATen opset has no right shift: build the step with shift_mode='divide'")
    try:
        from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower
        from executorch.exir.passes.init_mutable_pass import InitializedMutableBufferPass
    except ImportError as e:
        raise ImportError("the executorch runtime needs `pip install --no-deps executorch` "
                          "(see scripts/install_deps.sh)") from e
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # ExecuTorch serializes a buffer the program mutates without its values (it would start from
    # zeros) unless marked: B must start where the run starts (adapter.init_from's B)
    program = to_edge_transform_and_lower(export_program(step)).to_executorch(
        ExecutorchBackendConfig(passes=[InitializedMutableBufferPass(["lora_b_"])]))
    path.write_bytes(program.buffer)
    return path


def build_model(config: RunConfig, data: RunData) -> CausalLM:
    """The run's model as `prge train` builds it (prge.setup.setup_model: adapters attached and
    started from adapter.init_from when set, token ids checked against the vocabulary)."""
    if config.model.fold_lora_a:
        print("[prge] note: model.fold_lora_a changes nothing in an exported step: the exported module computes "
              "each A x on its own", file=sys.stderr)
    return setup_model(config, data.setup)


def export_run(config: RunConfig, runtime: str, out_dir: str | Path, data: RunData | None = None,
               log=print) -> Path:
    check_exportable(config, runtime)
    data = data or RunData(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = build_model(config, data)
    spec = StepSpec(config.estimator.queries, config.data.batch_size, config.data.max_length,
                    data.answer_tokens, config.estimator.distribution == "gaussian",
                    "divide" if runtime == "executorch" else "shift")
    log(f"[prge] exporting the P-RGE step (q={spec.queries}, b={spec.batch_size}, T={spec.seq_len}) "
        f"for {runtime} into {out}")
    if model.quantized:  # int8 / int4 at load, or a checkpoint's quantized projections kept as stored
        print(f"[prge] note: model.quantize {config.load_quantize}: the base's projections are quantized, and the "
              "exported step holds them dequantized to float32 (it computes what the quantized model computes, in "
              "the dense model's memory)", file=sys.stderr)
    start = time.perf_counter()
    if runtime == "onnx":
        step = FunctionalStep(model, spec)
        export_onnx(step, out / MODEL_FILES[runtime])
    elif runtime == "aoti":
        step = MutableBufferStep(model, spec)
        export_aoti(step, out / MODEL_FILES[runtime])
    else:
        step = MutableBufferStep(model, spec)
        export_executorch(step, out / MODEL_FILES[runtime])
    save_file({f"b_{i}": b.detach().cpu().contiguous() for i, b in enumerate(step.w.initial_b)},
              str(out / "initial_b.safetensors"))
    save_file({"input_ids": data.input_ids.contiguous(), "targets": data.targets.contiguous()},
              str(out / "batches.safetensors"))
    for name in ("initial_b.safetensors", "batches.safetensors"):
        durable.usual_mode(out / name)
    manifest = {
        "runtime": runtime, "model": MODEL_FILES[runtime], "initial_b": "initial_b.safetensors",
        "batches": "batches.safetensors", "lr": config.optimizer.lr, "epsilon": config.estimator.epsilon,
        "seed": config.run.seed, "steps": config.run.steps, "device": config.model.device,
        "queries": spec.queries, "batch_size": spec.batch_size, "seq_len": spec.seq_len,
        "answer_tokens": spec.answer_tokens, "adapters": step.w.adapter_names,
        "export_seconds": time.perf_counter() - start,
    }
    (out / "export.json").write_text(json.dumps(manifest, indent=2))
    log(f"[prge] exported in {manifest['export_seconds']:.1f} s; run it without Python: "
        f"prge_run_exported {out}")
    return out



"""`prge export CONFIG --runtime onnx|aoti` and `prge train CONFIG --engine onnx|aoti`.

An export directory holds everything a runtime needs to fine-tune without Python:
  step.onnx | step.pt2 | step.pte   the training step (one forward pass = one P-RGE dual step)
  initial_b.safetensors    b_0 .. b_{P-1}: LoRA-FA B before training (adapter order)
  batches.safetensors      input_ids / targets [steps, b, T]: the run's training batches,
                           drawn exactly as `prge train` draws them
  export.json              runtime, files, lr, epsilon, seed, device, adapter names
The C++ runner (prge_run_exported DIR) and the Python runners read the same directory.
Step s uses the step key counter_step_key(seed, s), so runs match the C++ engine with
`estimator.rng: counter`."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from prge._core import IGNORE_INDEX, LlamaModel, RunConfig, Trainer, counter_step_key
from prge.data.batching import BatchSampler, PromptEncoder
from prge.data.tasks import get_task
from prge.export import runtimes
from prge.export.step_module import FunctionalStep, MutableBufferStep, StepSpec
from prge.models import load_tokenizer, resolve_model
from prge import run_summary
from prge.progress import progress_bar
from prge.train import split_protocol

RUNTIMES = ("onnx", "aoti", "executorch")
MODEL_FILES = {"onnx": "step.onnx", "aoti": "step.pt2", "executorch": "step.pte"}


def check_exportable(config: RunConfig, runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime '{runtime}' (allowed: {', '.join(RUNTIMES)})")
    e, o = config.estimator, config.optimizer
    problems = []
    if e.kind != "prge" or e.parallel != "dual" or e.difference != "central":
        problems.append(f"estimator must be prge / dual / central (got {e.kind} / {e.parallel} / {e.difference})")
    if e.rng != "counter":
        problems.append("estimator.rng must be 'counter' (the integer-op RNG an engine can run)")
    if o.kind != "sgd" or o.momentum or o.weight_decay or o.schedule != "constant" or o.warmup_steps or o.accumulate != 1:
        problems.append("optimizer must be plain sgd (kind: sgd, momentum and weight_decay 0, schedule: constant, "
                        "no warmup_steps, accumulate: 1): the exported step fuses that update")
    if not config.use_adapter:
        problems.append("LoRA-FA adapters are required (adapter: null given)")
    if runtime in ("onnx", "executorch") and config.model.device != "cpu":
        problems.append(f"the {runtime} runner runs on the CPU: set model.device: cpu")
    if problems:
        raise ValueError("cannot export this config: " + "; ".join(problems))


def pad_to(batch, length: int):
    ids, targets = batch.input_ids, batch.targets
    if ids.shape[1] > length:
        raise ValueError(f"a batch is {ids.shape[1]} tokens long, longer than data.max_length={length}")
    pad = length - ids.shape[1]
    return (torch.nn.functional.pad(ids, (0, pad), value=0),
            torch.nn.functional.pad(targets, (0, pad), value=IGNORE_INDEX))


class RunData:
    """The run's encoder, splits and training batches, as `prge train` builds them."""

    def __init__(self, config: RunConfig):
        self.task = get_task(config.data.task)
        self.model_dir = resolve_model(config.model.name)
        self.encoder = PromptEncoder(self.task, load_tokenizer(self.model_dir), config.data.max_length)
        self.train, self.dev, self.eval = (self.encoder.encode_all(split) for split in
                                           split_protocol(self.task, config.data, config.run.seed))
        self.answer_tokens = max(len(ids) for ids in self.encoder.label_ids)
        sampler = BatchSampler(len(self.train), config.data.batch_size, config.run.seed)
        batches = [pad_to(self.encoder.batch([self.train[i] for i in sampler.next()]), config.data.max_length)
                   for _ in range(config.run.steps)]
        shape = (0, config.data.batch_size, config.data.max_length)
        self.input_ids = torch.stack([b[0] for b in batches]) if batches else torch.zeros(shape, dtype=torch.int64)
        self.targets = torch.stack([b[1] for b in batches]) if batches else torch.zeros(shape, dtype=torch.int64)


def build_model(config: RunConfig, model_dir: Path) -> LlamaModel:
    model = LlamaModel.from_pretrained(str(model_dir), config.model.device, config.model.dtype)
    model.attach_adapters(config.adapter)
    return model


def export_run(config: RunConfig, runtime: str, out_dir: str | Path, data: RunData | None = None,
               log=print) -> Path:
    check_exportable(config, runtime)
    data = data or RunData(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = build_model(config, data.model_dir)
    spec = StepSpec(config.estimator.queries, config.data.batch_size, config.data.max_length,
                    data.answer_tokens, config.estimator.distribution == "gaussian",
                    "divide" if runtime == "executorch" else "shift")
    log(f"[prge] exporting the P-RGE step (q={spec.queries}, b={spec.batch_size}, T={spec.seq_len}) "
        f"for {runtime} into {out}")
    start = time.perf_counter()
    if runtime == "onnx":
        step = FunctionalStep(model, spec)
        runtimes.export_onnx(step, out / MODEL_FILES[runtime])
    elif runtime == "aoti":
        step = MutableBufferStep(model, spec)
        runtimes.export_aoti(step, out / MODEL_FILES[runtime])
    else:
        step = MutableBufferStep(model, spec)
        runtimes.export_executorch(step, out / MODEL_FILES[runtime])
    save_file({f"b_{i}": b.detach().cpu().contiguous() for i, b in enumerate(step.w.initial_b)},
              str(out / "initial_b.safetensors"))
    save_file({"input_ids": data.input_ids.contiguous(), "targets": data.targets.contiguous()},
              str(out / "batches.safetensors"))
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


def open_runner(export_dir: str | Path):
    export_dir = Path(export_dir)
    manifest = json.loads((export_dir / "export.json").read_text())
    path = export_dir / manifest["model"]
    if manifest["runtime"] == "onnx":
        from safetensors.torch import load_file

        initial = load_file(str(export_dir / manifest["initial_b"]))
        return runtimes.OnnxRunner(path, [initial[f"b_{i}"] for i in range(len(initial))])
    if manifest["runtime"] == "executorch":
        return runtimes.ExecuTorchRunner(path)
    return runtimes.AotiRunner(path, manifest["device"])


def train_with_engine(config: RunConfig, runtime: str, progress: bool = True, log=print) -> dict:
    """Fine-tune through the runtime (every step is one call of the exported module);
    accuracy before and after is measured by prge's own model with the engine's B."""
    from prge.evaluation import accuracy

    check_exportable(config, runtime)
    out = Path(config.run.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(config.to_yaml())
    data = RunData(config)
    export_dir = export_run(config, runtime, out / f"export_{runtime}", data, log=log)
    runner = open_runner(export_dir)
    model = build_model(config, data.model_dir)
    evaluator = Trainer(model, config.estimator, config.optimizer, config.run.seed)
    acc_before = accuracy(evaluator, data.encoder, data.eval)
    log(f"[prge] {runtime} engine: accuracy before {acc_before:.4f}")
    bar = progress_bar(config.run.steps, progress)
    lora_b, times = None, []
    with open(out / "metrics.jsonl", "w") as metrics:
        for s in range(config.run.steps):
            start = time.perf_counter()
            loss, grads, lora_b = runner.step(data.input_ids[s], data.targets[s], config.optimizer.lr,
                                              config.estimator.epsilon, counter_step_key(config.run.seed, s))
            times.append(time.perf_counter() - start)
            if (s + 1) % config.run.log_every == 0 or s + 1 == config.run.steps:
                metrics.write(json.dumps({"step": s + 1, "loss": loss, "seconds": times[-1],
                                          "projected_grads": grads.tolist()}) + "\n")
            if bar:
                bar.set_postfix(loss=f"{loss:.4f}")
                bar.update(1)
    if bar:
        bar.close()
    if lora_b is not None:
        with torch.no_grad():
            for adapter, b in zip(model.adapters(), lora_b):
                adapter["lora_b"].copy_(b.to(adapter["lora_b"].dtype))
    acc_after = accuracy(evaluator, data.encoder, data.eval)
    evaluator.save_checkpoint(str(out / "trained.safetensors"))
    summary = run_summary.write(out, run_summary.identity(config, mode="train", engine=runtime, task=data.task.name), {
               "accuracy_before": acc_before, "accuracy_after": acc_after,
               "accuracy_best": max(acc_before, acc_after), "best_step": config.run.steps if acc_after > acc_before else 0,
               "eval_history": [{"step": 0, "eval_accuracy": acc_before},
                                {"step": config.run.steps, "eval_accuracy": acc_after}],
               "mean_step_seconds": sum(times) / len(times) if times else None})
    log(f"[prge] {runtime} engine: accuracy after {config.run.steps} steps {acc_after:.4f} "
        f"(before {acc_before:.4f}); results in {out}")
    return summary


def runner_binary() -> Path:
    """The pure C++ runner, prge_run_exported, installed beside the package (or in the build tree)."""
    here = Path(__file__).resolve().parents[1]
    candidates = [here / "bin" / "prge_run_exported"]
    try:
        import importlib.util

        spec = importlib.util.find_spec("prge._core")
        if spec and spec.origin:
            candidates.append(Path(spec.origin).parent / "bin" / "prge_run_exported")
    except ImportError:
        pass
    candidates.append(here.parents[1] / "build" / "py" / "csrc" / "prge_run_exported")
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"prge_run_exported not found (looked in {', '.join(map(str, candidates))})")

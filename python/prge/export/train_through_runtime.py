"""`prge train CONFIG --runtime onnx|aoti|executorch`: fine-tune through an inference runtime,
every step one call of the exported module; accuracy before and after is measured by prge's
own model with the runtime's B."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from prge import run_summary
from prge._core import RunConfig, Trainer, counter_step_key
from prge.export.exporters import build_model, check_exportable, export_run
from prge.export.run_data import RunData
from prge.export.runners import open_runner
from prge.evaluation import accuracy
from prge.model_identity import run_model_fingerprint
from prge.preflight import check_names
from prge.progress import progress_bar
from prge.run_dir import claim


def train_through_runtime(config: RunConfig, runtime: str, progress: bool = True, log=print,
                          overwrite: bool = False) -> dict:
    check_names(config)  # before anything is loaded, as run_training does
    check_exportable(config, runtime)
    data = RunData(config)
    with claim(config.run.output_dir, config.to_yaml(), overwrite, reads={"the model directory": data.model_dir}) as out:
        return _train(config, runtime, data, out, progress, log)


def _train(config: RunConfig, runtime: str, data: RunData, out: Path, progress: bool, log) -> dict:
    export_dir = export_run(config, runtime, out / f"export_{runtime}", data, log=log)
    runner = open_runner(export_dir)
    model = build_model(config, data)
    evaluator = Trainer(model, config.estimator, config.optimizer, config.run.seed)
    acc_before = accuracy(evaluator, data.encoder, data.eval)
    log(f"[prge] {runtime}: accuracy before {acc_before:.4f}")
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
    summary = run_summary.write(out, run_summary.identity(config, mode="train", runtime=runtime, task=data.task.name), {
               "accuracy_before": acc_before, "accuracy_after": acc_after,
               "accuracy_best": max(acc_before, acc_after), "best_step": config.run.steps if acc_after > acc_before else 0,
               "eval_history": [{"step": 0, "eval_accuracy": acc_before},
                                {"step": config.run.steps, "eval_accuracy": acc_after}],
               "mean_step_seconds": sum(times) / len(times) if times else None,
               "model_fingerprint": run_model_fingerprint(config, data.model_dir)})
    log(f"[prge] {runtime}: accuracy after {config.run.steps} steps {acc_after:.4f} "
        f"(before {acc_before:.4f}); results in {out}")
    return summary

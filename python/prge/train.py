"""One training run: config -> model + adapters -> trainer -> metrics -> results on disk."""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch

from prge._core import LlamaModel, RunConfig, Trainer
from prge.data.batching import BatchSampler, PromptEncoder
from prge.data.tasks import get_task
from prge.evaluation import accuracy
from prge.models import load_tokenizer, resolve_model


def select_examples(examples: list, n: int, seed: int, shuffle: bool) -> list:
    """Paper protocol: the first n examples after a seeded shuffle (train), or the first n."""
    if shuffle:
        examples = examples[:]
        random.Random(seed).shuffle(examples)
    return examples[:n]


def run_training(config: RunConfig, progress: bool = True, log=print) -> dict:
    out_dir = Path(config.run.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(config.to_yaml())

    task = get_task(config.data.task)
    model_dir = resolve_model(config.model.name)
    tokenizer = load_tokenizer(model_dir)
    encoder = PromptEncoder(task, tokenizer, config.data.max_length)
    data_dir = config.data.data_dir or None
    train = encoder.encode_all(select_examples(task.load("train", data_dir), config.data.train_examples,
                                               config.run.seed, shuffle=True))
    evaluation = encoder.encode_all(select_examples(task.load("eval", data_dir),
                                                    config.data.eval_examples, config.run.seed,
                                                    shuffle=False))

    model = LlamaModel.from_pretrained(str(model_dir), config.model.device, config.model.dtype)
    if config.use_adapter:
        model.attach_adapters(config.adapter)
    torch.manual_seed(config.run.seed)
    trainer = Trainer(model, config.estimator, config.optimizer, config.run.seed)
    sampler = BatchSampler(len(train), config.data.batch_size, config.run.seed)

    def evaluate() -> float:
        return accuracy(trainer, encoder, evaluation)

    log(f"[prge] {config.estimator.kind} q={config.estimator.queries} "
        f"parallel={config.estimator.parallel} on {task.name} with {config.model.name}: "
        f"{len(train)} train / {len(evaluation)} eval examples, {config.run.steps} steps")
    history = []
    acc_before = evaluate()
    history.append({"step": 0, "eval_accuracy": acc_before})
    log(f"[prge] accuracy before: {acc_before:.4f}")
    best = acc_before
    metrics_path = out_dir / "metrics.jsonl"
    step_seconds = []
    bar = _progress(config.run.steps, progress)
    with open(metrics_path, "w") as metrics:
        for step in range(config.run.steps):
            result = trainer.step(encoder.batch([train[i] for i in sampler.next()]))
            step_seconds.append(result.seconds)
            record = {"step": step + 1, "loss": result.loss, "seconds": result.seconds,
                      "forward_passes": result.forward_passes, "sequences": result.sequences}
            if (step + 1) % config.run.log_every == 0:
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
            if config.run.eval_every and (step + 1) % config.run.eval_every == 0 and step + 1 < config.run.steps:
                acc = evaluate()
                best = max(best, acc)
                history.append({"step": step + 1, "eval_accuracy": acc})
                metrics.write(json.dumps({"step": step + 1, "eval_accuracy": acc}) + "\n")
                log(f"[prge] step {step + 1}: accuracy {acc:.4f}")
            if bar:
                bar.set_postfix(loss=f"{result.loss:.4f}")
                bar.update(1)
    if bar:
        bar.close()
    acc_after = evaluate()
    best = max(best, acc_after)
    history.append({"step": config.run.steps, "eval_accuracy": acc_after})
    trainer.save_checkpoint(str(out_dir / "trained.safetensors"))
    summary = {
        "task": task.name, "model": config.model.name,
        "estimator": config.estimator.kind, "queries": config.estimator.queries,
        "parallel": config.estimator.parallel, "steps": config.run.steps, "seed": config.run.seed,
        "accuracy_before": acc_before, "accuracy_after": acc_after, "accuracy_best": best,
        "eval_history": history,
        "mean_step_seconds": sum(step_seconds) / len(step_seconds) if step_seconds else None,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    tmp = out_dir / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(out_dir / "summary.json")  # written last: its presence marks a finished run
    log(f"[prge] accuracy after {config.run.steps} steps: {acc_after:.4f} "
        f"(before {acc_before:.4f}); results in {out_dir}")
    return summary


def _progress(total: int, enabled: bool):
    if not enabled or total == 0:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="train", unit="step", dynamic_ncols=True)

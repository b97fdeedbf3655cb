"""One training run: config -> model + adapters -> trainer -> metrics -> results on disk."""
from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from prge import run_summary
from prge.progress import progress_bar
from prge._core import LlamaModel, RunConfig, Trainer
from prge.data.batching import BatchSampler, PromptEncoder
from prge.data.tasks import get_task
from prge.evaluation import evaluate as evaluate_examples, majority_baseline
from prge.models import load_tokenizer, resolve_model


def select_examples(examples: list, n: int, seed: int, shuffle: bool) -> list:
    """Paper protocol: the first n examples after a seeded shuffle (train), or the first n."""
    if shuffle:
        examples = examples[:]
        random.Random(seed).shuffle(examples)
    return examples[:n]


def split_protocol(task, data, seed: int) -> tuple[list, list, list]:
    """(train, dev, test) examples of a protocol; dev is empty under the paper protocol.

    paper: first train_examples of the seeded-shuffled train split; the first
           eval_examples of the validation split.
    mezo:  train_examples then dev_examples of the seeded-shuffled train split;
           eval_examples of the seeded-shuffled validation split as the test set."""
    data_dir = data.data_dir or None
    train_all, eval_all = task.load("train", data_dir), task.load("eval", data_dir)
    if data.protocol == "paper":
        return (select_examples(train_all, data.train_examples, seed, shuffle=True), [],
                select_examples(eval_all, data.eval_examples, seed, shuffle=False))
    needed = data.train_examples + data.dev_examples
    if len(train_all) < needed:
        raise ValueError(f"{task.name}: the mezo protocol needs {needed} train examples "
                         f"({data.train_examples} train + {data.dev_examples} dev), the split has {len(train_all)}")
    shuffled = select_examples(train_all, needed, seed, shuffle=True)
    return (shuffled[:data.train_examples], shuffled[data.train_examples:],
            select_examples(eval_all, data.eval_examples, seed, shuffle=True))


def run_training(config: RunConfig, progress: bool = True, log=print) -> dict:
    out_dir = Path(config.run.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(config.to_yaml())

    task = get_task(config.data.task)
    model_dir = resolve_model(config.model.name)
    tokenizer = load_tokenizer(model_dir)
    encoder = PromptEncoder(task, tokenizer, config.data.max_length)
    train, dev, evaluation = (encoder.encode_all(split) for split in
                              split_protocol(task, config.data, config.run.seed))

    model = LlamaModel.from_pretrained(str(model_dir), config.model.device, config.model.dtype)
    if config.use_adapter:
        model.attach_adapters(config.adapter)
    torch.manual_seed(config.run.seed)
    trainer = Trainer(model, config.estimator, config.optimizer, config.run.seed)
    sampler = BatchSampler(len(train), config.data.batch_size, config.run.seed)

    def evaluate(step: int, passes: int, sequences: int) -> dict:
        metrics = evaluate_examples(trainer, encoder, evaluation, progress=progress)
        record = {"step": step, "forward_passes": passes, "sequences": sequences,
                  "eval_accuracy": metrics["accuracy"], "eval_macro_f1": metrics["macro_f1"]}
        if dev:
            record["dev_accuracy"] = evaluate_examples(trainer, encoder, dev, progress=progress)["accuracy"]
        return record

    def describe(record: dict) -> str:
        return (f"accuracy {record['eval_accuracy']:.4f}, macro-F1 {record['eval_macro_f1']:.4f}"
                + (f" (dev accuracy {record['dev_accuracy']:.4f})" if dev else ""))

    log(f"[prge] {config.estimator.kind} q={config.estimator.queries} "
        f"parallel={config.estimator.parallel} on {task.name} with {config.model.name}: "
        f"{len(train)} train / {len(dev)} dev / {len(evaluation)} eval examples "
        f"({config.data.protocol} protocol), {config.run.steps} steps")
    trivial = majority_baseline(evaluation, len(encoder.label_ids))
    majority = trivial["accuracy"]
    history = [evaluate(0, 0, 0)]
    log(f"[prge] before training: {describe(history[0])}; "
        f"always answering the majority class: accuracy {majority:.4f}, macro-F1 {trivial['macro_f1']:.4f}")
    metrics_path = out_dir / "metrics.jsonl"
    step_seconds = []
    passes = sequences = 0
    bar = progress_bar(config.run.steps, progress)
    with open(metrics_path, "w") as metrics:
        metrics.write(json.dumps(history[0]) + "\n")
        for step in range(1, config.run.steps + 1):
            result = trainer.step(encoder.batch([train[i] for i in sampler.next()]))
            step_seconds.append(result.seconds)
            passes += result.forward_passes
            sequences += result.sequences
            if step % config.run.log_every == 0:
                metrics.write(json.dumps({"step": step, "loss": result.loss, "seconds": result.seconds,
                                          "forward_passes": passes, "sequences": sequences}) + "\n")
                metrics.flush()
            if step == config.run.steps or (config.run.eval_every and step % config.run.eval_every == 0):
                history.append(evaluate(step, passes, sequences))
                metrics.write(json.dumps(history[-1]) + "\n")
                metrics.flush()
                log(f"[prge] step {step}: {describe(history[-1])}")
            if bar:
                bar.set_postfix(loss=f"{result.loss:.4f}")
                bar.update(1)
    if bar:
        bar.close()
    acc_before, acc_after = history[0]["eval_accuracy"], history[-1]["eval_accuracy"]
    best = best_checkpoint(history)
    trainer.save_checkpoint(str(out_dir / "trained.safetensors"))
    summary = run_summary.write(out_dir, run_summary.identity(config, mode="train", task=task.name), {
        "accuracy_before": acc_before, "accuracy_after": acc_after,
        "accuracy_best": best["eval_accuracy"], "best_step": best["step"],
        "macro_f1_before": history[0]["eval_macro_f1"], "macro_f1_after": history[-1]["eval_macro_f1"],
        "majority_accuracy": majority,
        "forward_passes": passes, "sequences": sequences,
        "eval_history": history,
        "mean_step_seconds": sum(step_seconds) / len(step_seconds) if step_seconds else None,
    })
    log(f"[prge] after {config.run.steps} steps: accuracy {acc_before:.4f} -> {acc_after:.4f}, "
        f"macro-F1 {history[0]['eval_macro_f1']:.4f} -> {history[-1]['eval_macro_f1']:.4f} "
        f"(majority-class accuracy {majority:.4f}); results in {out_dir}")
    return summary


def best_checkpoint(history: list[dict]) -> dict:
    """The evaluation record of the best checkpoint: highest dev accuracy where a dev set
    exists (MeZO protocol, reported on test), else highest eval accuracy; ties go to the
    earlier step."""
    key = "dev_accuracy" if "dev_accuracy" in history[0] else "eval_accuracy"
    return max(history, key=lambda r: (r[key], -r["step"]))



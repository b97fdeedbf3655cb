"""One training run: config -> model + adapters -> trainer -> metrics -> results on disk."""
from __future__ import annotations

import json
import math
import os
import random
import signal
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from prge import checkpoints, distributed, run_summary
from prge.run_dir import claim
from prge.progress import progress_bar
from prge._core import LlamaModel, RunConfig, Trainer
from prge.data.batching import BatchSampler, PromptEncoder, load_chat_template
from prge.data.tasks import task_for
from prge.evaluation import evaluate as evaluate_examples, majority_baseline
from prge.generation import answer_metrics, stop_ids
from prge.models import load_tokenizer, resolve_model


class RunInterrupted(ValueError):
    """Ctrl-C: the run stopped after a whole step, with a checkpoint to resume from."""


# Ctrl-C, and SIGTERM: what torchrun sends every rank on Ctrl-C, and what schedulers send
# before preempting a job.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_interrupt():
    """The first Ctrl-C or SIGTERM asks the loop to stop after the step in flight (a second one
    stops at once); yields a function telling whether one arrived."""
    pressed = []

    def handler(signum, frame):
        if pressed:
            raise KeyboardInterrupt
        pressed.append(signum)

    try:
        previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    except ValueError:  # not the main thread: no handler, Ctrl-C behaves as usual
        yield lambda: False
        return
    try:
        yield lambda: bool(pressed)
    finally:
        for sig, before in previous.items():
            signal.signal(sig, before)


class DivergenceError(ValueError):
    """A step produced a non-finite loss or projected gradient: the run stops there."""


def check_finite(step: int, result, metrics_path: Path) -> None:
    values = [result.loss, *result.projected_grads]
    if all(math.isfinite(v) for v in values):
        return
    grads = ", ".join(f"{g:.4g}" for g in result.projected_grads)
    raise DivergenceError(
        f"step {step}: the run diverged (loss {result.loss:.4g}, projected gradients [{grads}]); it stopped "
        f"there: {metrics_path} ends at the last finite step and no summary.json marks the run finished. "
        "Lower optimizer.lr or estimator.epsilon.")


def check_token_ids(model_dir, vocab_size: int, encoder, examples) -> None:
    """Every id the tokenizer produced for this run indexes the model's vocabulary."""
    ids = [i for e in examples for i in e.prompt_ids + (e.answer_ids or [])]
    ids += [i for word in encoder.label_ids for i in word]
    top = max(ids, default=0)
    if top >= vocab_size:
        raise ValueError(f"{model_dir}/tokenizer.json: token id {top} is outside the model's vocabulary "
                         f"(vocab_size {vocab_size} in config.json): tokenizer and weights do not belong together")


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


def run_training(config: RunConfig, progress: bool = True, log=print, overwrite: bool = False,
                 resume: bool = False, rank_timeout: float = distributed.DEFAULT_TIMEOUT_SECONDS) -> dict | None:
    """One run; under torchrun, this process's part of it (see prge.distributed): every rank
    trains, rank 0 alone writes, and only rank 0 returns the summary."""
    team = None
    if distributed.launched():
        if config.estimator.kind == "first_order":
            raise ValueError("estimator.kind: first_order runs in one process; the distributed step is zeroth-order")
        grid = distributed.start(config.run.data_parallel, config.model.device, rank_timeout)
        grid.check(config.estimator.queries, config.data.batch_size)
        team = distributed.Communicator(grid, rank_timeout)
    elif config.run.data_parallel != 1:
        raise ValueError(f"run.data_parallel: {config.run.data_parallel} needs as many processes or a multiple "
                         "(torchrun --nproc-per-node N -m prge train CONFIG); this is a single process")
    writer = team is None or team.grid.rank == 0
    if not writer:
        log, progress = (lambda *args, **kwargs: None), False
    task = task_for(config.data)
    model_dir = resolve_model(config.model.name)
    tokenizer = load_tokenizer(model_dir)
    encoder = PromptEncoder(task, tokenizer, config.data.max_length,
                            chat_template=load_chat_template(model_dir) if task.chat_template else None)
    train, dev, evaluation = (encoder.encode_all(split) for split in
                              split_protocol(task, config.data, config.run.seed))

    device = distributed.device_for(config.model.device)
    model = LlamaModel.from_pretrained(str(model_dir), device, config.model.dtype)
    check_token_ids(model_dir, model.config.vocab_size, encoder, train + dev + evaluation)
    if config.use_adapter:
        model.attach_adapters(config.adapter)
        if config.adapter.init_from:  # a PEFT adapter as the starting point
            from prge.adapters import load_peft

            load_peft(model, config.adapter.init_from, config.adapter)
    torch.manual_seed(config.run.seed)
    trainer = Trainer(model, config.estimator, config.optimizer, config.run.seed)
    sampler = BatchSampler(len(train), config.data.batch_size, config.run.seed)
    step_on, shard = trainer.step, None
    if team:
        step_on = distributed.DistributedStep(trainer, team, config.estimator.queries,
                                              config.estimator.difference == "central", device)
        shard = distributed.Shard(team)
        trained = ([a["lora_b"] for a in model.adapters()] if config.use_adapter
                   else [t for _, t in model.full_parameters()])
    # The output directory is claimed only once the config, data and model have loaded: bad
    # input never touches a directory. Rank 0 writes it; the others read a checkpoint from it.
    owner = claim(config.run.output_dir, config.to_yaml(), overwrite, resume) if writer else \
        nullcontext(Path(config.run.output_dir))
    with owner as out_dir:

        generation = task.generation
        primary = "perplexity" if generation else "accuracy"  # the metric best_checkpoint picks by

        stop = stop_ids(tokenizer, model_dir) if generation else []

        def evaluate(step: int, passes: int, sequences: int) -> dict:
            metrics = evaluate_examples(trainer, encoder, evaluation, progress=progress, shard=shard)
            if generation:  # greedy answers through the KV-cache decoder, SQuAD-style scores
                metrics.update(answer_metrics(model, encoder, evaluation, stop, shard=shard))
            record = {"step": step, "forward_passes": passes, "sequences": sequences,
                      **{f"eval_{k}": v for k, v in metrics.items()}}
            if dev:
                record[f"dev_{primary}"] = evaluate_examples(trainer, encoder, dev, progress=progress,
                                                             shard=shard)[primary]
            return record

        def describe(record: dict) -> str:
            if generation:
                text = (f"answer perplexity {record['eval_perplexity']:.4f}, exact match "
                        f"{record['eval_exact_match']:.4f}, token F1 {record['eval_token_f1']:.4f}")
            else:
                text = f"accuracy {record['eval_accuracy']:.4f}, macro-F1 {record['eval_macro_f1']:.4f}"
            return text + (f" (dev {primary} {record[f'dev_{primary}']:.4f})" if dev else "")

        log(f"[prge] {config.estimator.kind} q={config.estimator.queries} "
            f"parallel={config.estimator.parallel} on {task.name} with {config.model.name}: "
            f"{len(train)} train / {len(dev)} dev / {len(evaluation)} eval examples "
            f"({config.data.protocol} protocol), {config.run.steps} steps")
        if team:
            log(f"[prge] distributed: {team.grid.world} processes = {team.grid.query_groups} query group(s) x "
                f"{team.grid.data_parallel} data group(s), backend {distributed.backend()}")
        if not generation:
            trivial = majority_baseline(evaluation, len(encoder.label_ids))
        metrics_path = out_dir / "metrics.jsonl"
        step_seconds, passes, sequences, first = [], 0, 0, 1
        if resume:
            if team:  # rank 0 has checked the directory before the others read it
                team.barrier("resume")
            state = checkpoints.load(out_dir, trainer)
            sampler.set_state(state["sampler"])
            passes, sequences, step_seconds = state["forward_passes"], state["sequences"], state["step_seconds"]
            first = state["step"] + 1
            history = [r for r in checkpoints.metrics_until(metrics_path, state["step"])
                       if f"eval_{primary}" in r] if writer else []
            log(f"[prge] resuming after step {state['step']} from {out_dir / checkpoints.STATE}")
        else:
            history = [evaluate(0, 0, 0)]
            baseline = "" if generation else (f"; always answering the majority class: accuracy "
                                               f"{trivial['accuracy']:.4f}, macro-F1 {trivial['macro_f1']:.4f}")
            log(f"[prge] before training: {describe(history[0])}{baseline}")
            if writer:
                metrics_path.write_text(json.dumps(history[0]) + "\n")

        def checkpoint(step: int) -> None:
            if not writer:
                return
            checkpoints.save(out_dir, trainer, {"step": step, "sampler": sampler.state(), "forward_passes": passes,
                                                "sequences": sequences, "step_seconds": step_seconds})

        bar = progress_bar(config.run.steps, progress, initial=first - 1)
        with open(metrics_path if writer else os.devnull, "a") as metrics, stop_on_interrupt() as interrupted:
            if team:
                step_on.interrupted = interrupted  # the ranks agree on a Ctrl-C through the step's gather
            for step in range(first, config.run.steps + 1):
                result = step_on(encoder.batch([train[i] for i in sampler.next()]))
                check_finite(step, result, metrics_path)
                stopping = result.stop if team else interrupted()
                if team and (step % config.run.log_every == 0 or step == config.run.steps or stopping or
                             (config.run.checkpoint_every and step % config.run.checkpoint_every == 0)):
                    distributed.check_in_step(team, trained, step, device)
                step_seconds.append(result.seconds)
                passes += result.forward_passes
                sequences += result.sequences
                if step % config.run.log_every == 0:
                    metrics.write(json.dumps({"step": step, "loss": result.loss, "seconds": result.seconds,
                                              "forward_passes": passes, "sequences": sequences}) + "\n")
                if step == config.run.steps or (config.run.eval_every and step % config.run.eval_every == 0):
                    history.append(evaluate(step, passes, sequences))
                    metrics.write(json.dumps(history[-1]) + "\n")
                    log(f"[prge] step {step}: {describe(history[-1])}")
                metrics.flush()
                if bar:
                    bar.set_postfix(loss=f"{result.loss:.4f}")
                    bar.update(1)
                if stopping or (config.run.checkpoint_every and step % config.run.checkpoint_every == 0):
                    checkpoint(step)
                if stopping:
                    raise RunInterrupted(f"interrupted after step {step}: checkpoint saved in {out_dir}; "
                                         "continue with `prge train CONFIG --resume`")
        if bar:
            bar.close()
        if not writer:
            return None
        before, after = history[0][f"eval_{primary}"], history[-1][f"eval_{primary}"]
        best = best_checkpoint(history)
        trainer.save_checkpoint(str(out_dir / "trained.safetensors"))
        results = {f"{primary}_before": before, f"{primary}_after": after,
                   f"{primary}_best": best[f"eval_{primary}"], "best_step": best["step"]}
        if generation:
            results.update({"exact_match_after": history[-1]["eval_exact_match"],
                            "token_f1_after": history[-1]["eval_token_f1"]})
        else:
            results.update({"macro_f1_before": history[0]["eval_macro_f1"],
                            "macro_f1_after": history[-1]["eval_macro_f1"],
                            "majority_accuracy": trivial["accuracy"]})
        if team:
            results.update({"processes": team.grid.world, "data_parallel": team.grid.data_parallel,
                            "bytes_gathered_per_step": step_on.bytes_per_step})
        summary = run_summary.write(out_dir, run_summary.identity(config, mode="train", task=task.name), {
            **results, "forward_passes": passes, "sequences": sequences, "eval_history": history,
            "mean_step_seconds": sum(step_seconds) / len(step_seconds) if step_seconds else None,
        })
        if generation:
            log(f"[prge] after {config.run.steps} steps: answer perplexity {before:.4f} -> {after:.4f}; "
                f"results in {out_dir}")
        else:
            log(f"[prge] after {config.run.steps} steps: accuracy {before:.4f} -> {after:.4f}, "
                f"macro-F1 {history[0]['eval_macro_f1']:.4f} -> {history[-1]['eval_macro_f1']:.4f} "
                f"(majority-class accuracy {trivial['accuracy']:.4f}); results in {out_dir}")
        return summary


def best_checkpoint(history: list[dict]) -> dict:
    """The evaluation record of the best checkpoint: best dev metric where a dev set exists
    (MeZO protocol, reported on test), else best eval metric: the highest accuracy, or the
    lowest answer perplexity for generation tasks; ties go to the earlier step."""
    metric = "perplexity" if "eval_perplexity" in history[0] else "accuracy"
    key = f"dev_{metric}" if f"dev_{metric}" in history[0] else f"eval_{metric}"
    sign = -1.0 if metric == "perplexity" else 1.0
    return max(history, key=lambda r: (sign * r[key], -r["step"]))



"""One training run: config -> model + adapters -> trainer -> metrics -> results on disk."""
from __future__ import annotations

import json
import math
import os
import signal
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from prge import checkpoints, distributed, run_summary
from prge.run_dir import claim
from prge.progress import progress_bar
from prge._core import RunConfig, Trainer
from prge.data.batching import BatchSampler
from prge.evaluation import evaluate as evaluate_examples
from prge.setup import select_examples, setup_data, setup_model, split_protocol  # noqa: F401 (re-exported)


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
    data = setup_data(config)
    task, encoder, train, dev, evaluation = data.task, data.encoder, data.train, data.dev, data.eval
    kind = task.kind  # what the examples' answers are and how they are evaluated (prge.data.kinds)
    device = distributed.device_for(config.model.device)
    model = setup_model(config, data, device=device)
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

        primary = kind.primary  # the metric best_checkpoint picks by

        def evaluate(step: int, passes: int, sequences: int) -> dict:
            metrics = evaluate_examples(trainer, encoder, evaluation, progress=progress, shard=shard, split="eval",
                                        full=True, model=model)
            record = {"step": step, "forward_passes": passes, "sequences": sequences,
                      **{f"eval_{k}": v for k, v in metrics.items()}}
            if dev:
                record[f"dev_{primary}"] = evaluate_examples(trainer, encoder, dev, progress=progress,
                                                             shard=shard, split="dev")[primary]
            return record

        def metrics_of(record: dict) -> dict:
            return {k[len("eval_"):]: v for k, v in record.items() if k.startswith("eval_")}

        def describe(record: dict) -> str:
            text = kind.describe(metrics_of(record))
            return text + (f" (dev {primary} {record[f'dev_{primary}']:.4f})" if dev else "")

        log(f"[prge] {config.estimator.kind} q={config.estimator.queries} "
            f"parallel={config.estimator.parallel} on {task.name} ({kind.name}) with {config.model.name}: "
            f"{len(train)} train / {len(dev)} dev / {len(evaluation)} eval examples "
            f"({config.data.protocol} protocol), {config.run.steps} steps")
        log(f"[prge] step: {trainer.step_path}")
        if team:
            log(f"[prge] distributed: {team.grid.world} processes = {team.grid.query_groups} query group(s) x "
                f"{team.grid.data_parallel} data group(s), backend {distributed.backend()}")
        baseline = kind.baseline(task, evaluation)  # (log phrase, summary fields) of the trivial answer, or None
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
            log(f"[prge] before training: {describe(history[0])}" + (f"; {baseline[0]}" if baseline else ""))
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
        best = best_checkpoint(history, primary, kind.higher_is_better)
        trainer.save_checkpoint(str(out_dir / "trained.safetensors"))
        results = {f"{primary}_before": before, f"{primary}_after": after,
                   f"{primary}_best": best[f"eval_{primary}"], "best_step": best["step"],
                   **kind.results(metrics_of(history[0]), metrics_of(history[-1])), **(baseline[1] if baseline else {})}
        if team:
            results.update({"processes": team.grid.world, "data_parallel": team.grid.data_parallel,
                            "bytes_gathered_per_step": step_on.bytes_per_step})
        summary = run_summary.write(out_dir, run_summary.identity(config, mode="train", task=task.name), {
            **results, "forward_passes": passes, "sequences": sequences, "eval_history": history,
            "mean_step_seconds": sum(step_seconds) / len(step_seconds) if step_seconds else None,
            "step_path": trainer.step_path, "rng": trainer.rng,
        })
        log(f"[prge] after {config.run.steps} steps: {kind.change(metrics_of(history[0]), metrics_of(history[-1]))}"
            + (f" ({baseline[0]})" if baseline else "") + f"; results in {out_dir}")
        return summary


def best_checkpoint(history: list[dict], metric: str = "accuracy", higher_is_better: bool = True) -> dict:
    """The evaluation record of the best checkpoint by `metric` (the task kind's primary one):
    best dev value where a dev set exists (MeZO protocol, reported on test), else best eval
    value; highest unless `higher_is_better` is False (answer perplexity); ties go to the
    earlier step."""
    key = f"dev_{metric}" if f"dev_{metric}" in history[0] else f"eval_{metric}"
    sign = 1.0 if higher_is_better else -1.0
    return max(history, key=lambda r: (sign * r[key], -r["step"]))



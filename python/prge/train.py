"""One training run: config -> model + adapters -> trainer -> metrics -> results on disk."""
from __future__ import annotations

import json
import math
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from prge import checkpoints, distributed, durable, model_identity, preflight, run_summary
from prge.interrupts import stop_signals
from prge.run_dir import claim, shown
from prge.progress import above, closed_at_exit, progress_bar
from prge._core import RunConfig, Trainer
from prge.data.batching import BatchSampler
from prge.evaluation import evaluate as evaluate_examples
from prge.setup import select_examples, setup_data, setup_model, split_protocol  # noqa: F401 (re-exported)


class RunInterrupted(ValueError):
    """Ctrl-C or SIGTERM (prge.interrupts): the run stopped, and says how to resume it."""


class _Progress:
    """Where a run is, for the message of a Ctrl-C that stops it at any moment."""
    out_dir: Path | None = None
    step = 0  # the last step finished
    saved: int | None = None  # the step of the current checkpoint

    def __init__(self, command: str = "prge train CONFIG", preparing: str = "loading data and model"):
        self.command = command  # the run's command, which --resume continues
        self.preparing = preparing  # what the run does before it writes anything

    def interrupted(self) -> str:
        resume = f"continue with `{self.command} --resume`"
        if self.out_dir is None:
            return (f"interrupted before the run wrote anything (while {self.preparing}): nothing to resume; "
                    f"start it again with `{self.command}`")
        if self.saved is not None and self.saved == self.step:
            return f"interrupted after step {self.step}: checkpoint saved in {shown(self.out_dir)}; {resume}"
        if self.saved is not None:
            return (f"interrupted after step {self.step}: the last checkpoint, of step {self.saved}, is in "
                    f"{shown(self.out_dir)} (the steps after it are redone); {resume}")
        done = f"after step {self.step}, before any checkpoint" if self.step else "before step 1"
        return f"interrupted {done}: {resume} (it starts again from step 0 in {shown(self.out_dir)})"


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
                 resume: bool = False, rank_timeout: float = distributed.DEFAULT_TIMEOUT_SECONDS,
                 resume_changed_data: bool = False) -> dict | None:
    """One run; under torchrun, this process's part of it (see prge.distributed): every rank
    trains, rank 0 alone writes, and only rank 0 returns the summary. Ctrl-C at any moment
    ends in RunInterrupted, saying how to resume (prge.interrupts)."""
    where = _Progress()
    with stop_signals() as signals:
        try:
            return _run(config, progress, log, overwrite, resume, rank_timeout, resume_changed_data, signals, where)
        except KeyboardInterrupt:
            raise RunInterrupted(where.interrupted()) from None


def _run(config, progress, log, overwrite, resume, rank_timeout, resume_changed_data, signals, where):
    started = time.monotonic()  # the summary's wall_seconds: this process, load and evaluations included
    team = None
    preflight.check_names(config)
    preflight.check_mezo_weight_format(config)  # before the load that would find it
    if distributed.launched():
        if config.estimator.kind == "first_order":
            raise ValueError("estimator.kind: first_order runs in one process; the distributed step is zeroth-order")
        if config.run.checkpoint_format == "updates":  # its steps apply the host estimate; a replay would not
            raise ValueError(f"{config.places.get('run.checkpoint_format', 'run.checkpoint_format')}: updates is "
                             "replayed as one process applies the steps; under torchrun, checkpoint weights")
        grid = distributed.start(config.run.data_parallel, config.model.device, rank_timeout)
        team = distributed.Communicator(grid, rank_timeout)
        distributed.check_agreement(team, "config", config.to_yaml())  # before anything sized by it
        grid.check(config.estimator.queries, config.data.batch_size)
    elif config.run.data_parallel != 1:
        raise ValueError(f"run.data_parallel: {config.run.data_parallel} needs as many processes or a multiple "
                         "(torchrun --nproc-per-node N -m prge train CONFIG); this is a single process")
    writer = team is None or team.grid.rank == 0
    if not writer:
        log, progress = (lambda *args, **kwargs: None), False
    note = preflight.learning_rate_note(config)
    if note and writer:
        print(note, file=sys.stderr)
    data = setup_data(config)
    task, encoder, train, dev, evaluation = data.task, data.encoder, data.train, data.dev, data.eval
    kind = task.kind  # what the examples' answers are and how they are evaluated (prge.data.kinds)
    splits = {"train": train, "dev": dev, "eval": evaluation}
    fingerprint = checkpoints.data_fingerprint(splits)
    # stored with checkpoints and the summary: the model, and the adapter the run starts from
    model_fingerprint = model_identity.run_model_fingerprint(config, data.model_dir)
    if team:
        distributed.check_agreement(team, "data", fingerprint)
    device = distributed.device_for(config.model.device)
    model = setup_model(config, data, device=device)
    preflight.check_positions(config, model, data.model_dir)
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
    owner = claim(config.run.output_dir, config.to_yaml(), overwrite, resume,
                  reads={"the model directory": data.model_dir}) if writer else nullcontext(Path(config.run.output_dir))
    with owner as out_dir:
        where.out_dir = out_dir

        primary = kind.primary  # the metric best_checkpoint picks by

        def evaluate(step: int, passes: int, sequences: int) -> dict:
            return evaluation_record(trainer, encoder, evaluation, dev, step, passes, sequences, progress, shard, model)

        def describe(record: dict) -> str:
            text = kind.describe(metrics_of(record))
            return text + (f" (dev {primary} {record[f'dev_{primary}']:.4f})" if dev else "")

        method = (f"{config.estimator.kind} (backpropagation)" if config.estimator.kind == "first_order" else
                  f"{config.estimator.kind} q={config.estimator.queries} parallel={config.estimator.parallel}")
        log(f"[prge] {method} on {task.name} ({kind.name}) with {config.model.name}: "
            f"{len(train)} train / {len(dev)} dev / {len(evaluation)} eval examples "
            f"({config.data.protocol} protocol), {config.run.steps} steps")
        step_path = trainer.share_path if team else trainer.step_path
        log(f"[prge] step: {step_path}")
        if team:
            log(f"[prge] distributed: {team.grid.world} processes = {team.grid.query_groups} query group(s) x "
                f"{team.grid.data_parallel} data group(s), backend {distributed.backend()}")
        baseline = kind.baseline(task, evaluation)  # (log phrase, summary fields) of the trivial answer, or None
        metrics_path = out_dir / "metrics.jsonl"
        step_seconds, passes, sequences, first = [], 0, 0, 1
        # run.checkpoint_format updates: every step's projected gradients, and the fingerprint of
        # the weights they are replayed on (checkpoints.replay)
        updates = {"base": trainer.state_fingerprint(), "projected_grads": []} \
            if config.run.checkpoint_format == "updates" else None
        state = None
        if resume:
            if team:  # rank 0 has checked the directory before the others read it
                team.barrier("resume")
            state = checkpoints.load(out_dir, trainer, fingerprint, resume_changed_data, clean=writer, sampler=sampler,
                                     model=(data.model_dir, model_fingerprint,
                                            model_identity.starting_adapter(config)),
                                     earlier_fingerprints=lambda: checkpoints.earlier_data_fingerprints(splits))
            if state is None:
                log(f"[prge] {shown(out_dir)} holds no checkpoint yet: the run starts again from step 0")
        if state is not None:
            passes, sequences, step_seconds = state["forward_passes"], state["sequences"], state["step_seconds"]
            first = state["step"] + 1
            if updates is not None and "updates" not in state:  # the same numbers either way: go on as stored
                log(f"[prge] note: the checkpoint at step {state['step']} holds the weights, not every step's update "
                    "(it was written under run.checkpoint_format: weights): this run goes on checkpointing weights")
                updates = None
            elif updates is not None:  # steps 1..first-1 as the checkpoint held them
                updates["projected_grads"] = checkpoints.stored_updates(checkpoints.state_file(out_dir), state)[0]
            where.step = where.saved = state["step"]
            history = [r for r in checkpoints.metrics_until(metrics_path, state["step"])
                       if f"eval_{primary}" in r] if writer else []
            log(f"[prge] resuming after step {state['step']} from {shown(out_dir / checkpoints.POINTER)}")
            if note := checkpoints.generator_note(state, trainer, config):
                log(note)
        else:
            history = [evaluate(0, 0, 0)]
            log(f"[prge] before training: {describe(history[0])}" + (f"; {baseline[0]}" if baseline else ""))
            if writer:
                durable.write_text(metrics_path, json.dumps(history[0]) + "\n")
                durable.boundary("metrics.jsonl started")
            if signals.requested() and not team:  # under torchrun the ranks agree in the first step
                raise RunInterrupted(where.interrupted())

        def checkpoint(step: int) -> None:
            with signals.writing():  # a second Ctrl-C waits for the checkpoint to be whole
                if writer:
                    state = {"step": step, "sampler": sampler.state(), "forward_passes": passes,
                             "sequences": sequences, "step_seconds": step_seconds, "data": fingerprint,
                             "model": model_fingerprint, "rng": trainer.rng}
                    if updates is not None:
                        state["updates"] = {**updates, "weights": trainer.state_fingerprint()}
                    checkpoints.save(out_dir, trainer, state)
                where.saved = step

        bar = progress_bar(config.run.steps, progress, initial=first - 1)
        with durable.NamedAppend(metrics_path if writer else os.devnull) as metrics, closed_at_exit(bar):
            if team:
                step_on.interrupted = signals.requested  # the ranks agree on a Ctrl-C through the step's gather
            for step in range(first, config.run.steps + 1):
                result = step_on(encoder.batch([train[i] for i in sampler.next()]))
                where.step = step
                if updates is not None:
                    updates["projected_grads"].append(list(result.projected_grads))
                if step == first:
                    preflight.check_losses_differ(step, result, config)
                check_finite(step, result, metrics_path)
                stopping = result.stop if team else signals.requested()
                if team and (step % config.run.log_every == 0 or step == config.run.steps or stopping or
                             (config.run.checkpoint_every and step % config.run.checkpoint_every == 0)):
                    distributed.check_in_step(team, trained, step, device)
                step_seconds.append(result.seconds)
                passes += result.forward_passes
                sequences += result.sequences
                if step % config.run.log_every == 0:
                    metrics.write(json.dumps({"step": step, "loss": result.loss, "seconds": result.seconds,
                                              "forward_passes": passes, "sequences": sequences}) + "\n")
                if bar:  # before an evaluation: its own bar follows a finished step, the last one's a closed bar
                    bar.update(1)
                    bar.set_postfix(loss=f"{result.loss:.4f}")
                    if step == config.run.steps:
                        bar.close()
                        bar = None
                if step == config.run.steps or (config.run.eval_every and step % config.run.eval_every == 0):
                    history.append(evaluate(step, passes, sequences))
                    metrics.write(json.dumps(history[-1]) + "\n")
                    if step != config.run.steps or stopping:  # else the closing "after N steps" line has it
                        with above(bar):
                            log(f"[prge] step {step}: {describe(history[-1])}")
                    if bar:
                        bar.unpause()  # the evaluation's time out of the steps' rate and the ETA
                metrics.flush()
                if stopping or (config.run.checkpoint_every and step % config.run.checkpoint_every == 0):
                    checkpoint(step)
                if stopping:
                    raise RunInterrupted(where.interrupted())
        if not writer:
            return None
        with signals.writing():
            durable.boundary("trained.safetensors: begin")
            trainer.save_checkpoint(str(out_dir / "trained.safetensors"))
            durable.fsync_file(out_dir / "trained.safetensors")
        durable.boundary("trained.safetensors written")
        if signals.requested():  # while the final weights were written: resumable at the last step
            checkpoint(config.run.steps)
            raise RunInterrupted(where.interrupted())
        results = training_results(kind, history, baseline)
        if team:
            results.update({"processes": team.grid.world, "data_parallel": team.grid.data_parallel,
                            "bytes_gathered_per_step": step_on.bytes_per_step})
        summary = run_summary.write(out_dir, run_summary.identity(config, mode="train", task=task.name), {
            **results, "forward_passes": passes, "sequences": sequences, "eval_history": history,
            "mean_step_seconds": sum(step_seconds) / len(step_seconds) if step_seconds else None,
            "step_path": step_path, "rng": trainer.rng, "data_fingerprint": fingerprint,
            "model_fingerprint": model_fingerprint,
            "gated_low_rank_kernel_ran": model.gated_low_rank_kernel_calls > 0,  # in this process's part
            "wall_seconds": time.monotonic() - started, "resumed_after_step": state["step"] if state else 0,
        })
        durable.boundary("summary.json written")
        log(f"[prge] after {config.run.steps} steps: {kind.change(metrics_of(history[0]), metrics_of(history[-1]))}"
            + (f" ({baseline[0]})" if baseline else "") + f"; results in {shown(out_dir)}")
        return summary


def evaluation_record(trainer, encoder, evaluation: list, dev: list, step: int, passes: int, sequences: int,
                      progress: bool = False, shard=None, model=None) -> dict:
    """metrics.jsonl's evaluation record of `step`: the task kind's metrics on the eval split as
    eval_<metric> (prge.evaluation.evaluate, full), and the primary one on the dev split as
    dev_<metric> where the run has one; with the forward passes and sequences so far."""
    primary = encoder.task.kind.primary
    metrics = evaluate_examples(trainer, encoder, evaluation, progress=progress, shard=shard, split="eval",
                                full=True, model=model)
    record = {"step": step, "forward_passes": passes, "sequences": sequences,
              **{f"eval_{k}": v for k, v in metrics.items()}}
    if dev:
        record[f"dev_{primary}"] = evaluate_examples(trainer, encoder, dev, progress=progress,
                                                     shard=shard, split="dev")[primary]
    return record


def metrics_of(record: dict) -> dict:
    """An evaluation record's eval_<metric> values as {metric: value}."""
    return {k[len("eval_"):]: v for k, v in record.items() if k.startswith("eval_")}


def training_results(kind, history: list[dict], baseline: tuple | None) -> dict:
    """summary.json's results of a run's evaluation history (evaluation_record's, step 0 first):
    <primary>_before / _after / _best and best_step (best_checkpoint), the task kind's own
    (kind.results) and the trivial answer's (kind.baseline's fields, where it has one)."""
    primary = kind.primary
    best = best_checkpoint(history, primary, kind.higher_is_better)
    return {f"{primary}_before": history[0][f"eval_{primary}"], f"{primary}_after": history[-1][f"eval_{primary}"],
            f"{primary}_best": best[f"eval_{primary}"], "best_step": best["step"],
            **kind.results(metrics_of(history[0]), metrics_of(history[-1])), **(baseline[1] if baseline else {})}


def best_checkpoint(history: list[dict], metric: str = "accuracy", higher_is_better: bool = True) -> dict:
    """The evaluation record of the best checkpoint by `metric` (the task kind's primary one):
    best dev value where a dev set exists (MeZO protocol, reported on test), else best eval
    value; highest unless `higher_is_better` is False (answer perplexity); ties go to the
    earlier step."""
    key = f"dev_{metric}" if f"dev_{metric}" in history[0] else f"eval_{metric}"
    sign = 1.0 if higher_is_better else -1.0
    return max(history, key=lambda r: (sign * r[key], -r["step"]))



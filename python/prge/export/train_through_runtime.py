"""`prge train CONFIG --runtime onnx|aoti|executorch`: fine-tune through an inference runtime,
every step one call of the exported module. The task's metrics before and after are measured
by prge's own model with the runtime's B, and recorded as `prge train` records them
(metrics.jsonl, summary.json); Ctrl-C or SIGTERM stops after the step in flight with a
checkpoint (also every run.checkpoint_every steps) that `--resume` continues from (onnx, aoti:
ExecuTorch's bindings cannot set the program's B)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from prge import checkpoints, durable, run_summary
from prge._core import RunConfig, Trainer, counter_step_key
from prge.export.exporters import build_model, check_exportable, export_run
from prge.export.run_data import RunData
from prge.export.runners import open_runner
from prge.interrupts import stop_signals
from prge.model_identity import run_model_fingerprint, starting_adapter
from prge.preflight import check_names, epsilon_too_small
from prge.progress import closed_at_exit, progress_bar
from prge.run_dir import claim
from prge.train import RunInterrupted, _Progress, check_finite, evaluation_record, metrics_of, training_results


def train_through_runtime(config: RunConfig, runtime: str, progress: bool = True, log=print,
                          overwrite: bool = False, resume: bool = False) -> dict:
    """One run through `runtime`; its summary.json's fields as a `prge train` run's, with
    runtime and step_path naming the runtime. Raises ValueError (bad config, or what the
    exported step cannot express: exporters.check_exportable), ImportError (a runtime package
    missing), RunInterrupted (Ctrl-C / SIGTERM: how to resume), DivergenceError."""
    check_names(config)  # before anything is loaded, as run_training does
    check_exportable(config, runtime, run=True)
    command = f"prge train CONFIG --runtime {runtime}"
    if resume and runtime == "executorch":
        raise ValueError(f"--runtime executorch --resume: its Python bindings cannot set the program's B, so a run "
                         f"through it cannot continue; start it again: {command} --overwrite")
    data = RunData(config)
    where = _Progress(command, preparing="loading data and model, or exporting the step")
    with stop_signals() as signals:
        try:
            with claim(config.run.output_dir, config.to_yaml(), overwrite, resume,
                       reads={"the model directory": data.model_dir}) as out:
                where.out_dir = out
                return _train(config, runtime, data, out, progress, log, resume, signals, where)
        except KeyboardInterrupt:
            if runtime == "executorch" and where.out_dir is not None:
                raise RunInterrupted(f"interrupted after step {where.step}: a run through executorch cannot continue; "
                                     f"start it again with `{command} --overwrite`") from None
            raise RunInterrupted(where.interrupted()) from None


def _export(config: RunConfig, runtime: str, data: RunData, out: Path, resume: bool, log, where) -> Path:
    """The run's export directory: the one a resumed run made (export.json is written last),
    else a new export; a failed new export takes the run's files with it, so that the
    directory is as if the run had not started (no --overwrite needed to try again)."""
    export_dir = out / f"export_{runtime}"
    if resume and (export_dir / "export.json").is_file():
        log(f"[prge] {runtime}: the run's export in {export_dir}")
        return export_dir
    try:
        return export_run(config, runtime, export_dir, data, log=log)
    except BaseException:
        if not resume:
            for name in ("config.yaml", export_dir.name):
                durable.remove(out / name)
            where.out_dir = None  # a Ctrl-C's message: nothing to resume
        raise


def _train(config: RunConfig, runtime: str, data: RunData, out: Path, progress: bool, log, resume: bool,
           signals, where) -> dict:
    started = time.monotonic()
    runner = open_runner(_export(config, runtime, data, out, resume, log, where))
    model = build_model(config, data)
    trainer = Trainer(model, config.estimator, config.optimizer, config.run.seed)  # evaluates and checkpoints B
    kind, encoder = data.task.kind, data.encoder
    splits = {"train": data.train, "dev": data.dev, "eval": data.eval}
    fingerprint = checkpoints.data_fingerprint(splits)
    model_fingerprint = run_model_fingerprint(config, data.model_dir)
    metrics_path, steps = out / "metrics.jsonl", config.run.steps
    sequences_per_step = 2 * config.estimator.queries * config.data.batch_size  # the dual step's ±ε copies
    state = checkpoints.load(out, trainer, fingerprint, model=(data.model_dir, model_fingerprint,
                                                              starting_adapter(config)),
                             changed_data_option=None,
                             earlier_fingerprints=lambda: checkpoints.earlier_data_fingerprints(splits)) if resume else None  # --resume-changed-data: not here
    if resume and state is None:
        log(f"[prge] {out} holds no checkpoint yet: the run starts again from step 0")
    baseline = kind.baseline(data.task, data.eval)

    def evaluate(step: int, passes: int, sequences: int) -> dict:
        return evaluation_record(trainer, encoder, data.eval, data.dev, step, passes, sequences, progress)

    if state is not None:
        first, passes, sequences, times = state["step"], state["forward_passes"], state["sequences"], state["step_seconds"]
        runner.set_b([a["lora_b"] for a in model.adapters()])
        history = [r for r in checkpoints.metrics_until(metrics_path, first) if f"eval_{kind.primary}" in r]
        where.step = where.saved = first
        log(f"[prge] {runtime}: resuming after step {first} from {out / checkpoints.POINTER}")
    else:
        first, passes, sequences, times = 0, 0, 0, []
        history = [evaluate(0, 0, 0)]
        log(f"[prge] {runtime}: before training: {kind.describe(metrics_of(history[0]))}"
            + (f"; {baseline[0]}" if baseline else ""))
        durable.write_text(metrics_path, json.dumps(history[0]) + "\n")
    lora_b = [a["lora_b"].detach().clone() for a in model.adapters()]

    def hold(step: int) -> None:  # the runtime's B into prge's model, as of `step`
        with torch.no_grad():
            for adapter, b in zip(model.adapters(), lora_b):
                adapter["lora_b"].copy_(b.to(adapter["lora_b"].dtype))
        trainer.step_count = step

    def checkpoint(step: int) -> None:
        with signals.writing():  # a second Ctrl-C waits for the checkpoint to be whole
            hold(step)
            checkpoints.save(out, trainer, {
                "step": step, "sampler": data.sampler_state(step), "forward_passes": passes, "sequences": sequences,
                "step_seconds": times, "data": fingerprint, "model": model_fingerprint, "rng": "counter"})
            where.saved = step

    bar = progress_bar(steps, progress, initial=first)
    with durable.NamedAppend(metrics_path) as metrics, closed_at_exit(bar):
        for s in range(first, steps):
            start = time.perf_counter()
            loss, grads, lora_b = runner.step(data.input_ids[s], data.targets[s], config.optimizer.lr,
                                              config.estimator.epsilon, counter_step_key(config.run.seed, s))
            times.append(time.perf_counter() - start)
            step = where.step = s + 1
            _check_step(step, loss, grads, config, metrics_path)
            passes, sequences = passes + 1, sequences + sequences_per_step
            if step % config.run.log_every == 0 or step == steps:
                metrics.write(json.dumps({"step": step, "loss": loss, "seconds": times[-1], "forward_passes": passes,
                                          "sequences": sequences, "projected_grads": grads.tolist()}) + "\n")
                metrics.flush()
            if bar:
                bar.set_postfix(loss=f"{loss:.4f}")
                bar.update(1)
            stopping = signals.requested()
            if stopping or (config.run.checkpoint_every and step % config.run.checkpoint_every == 0 and step < steps):
                checkpoint(step)
            if stopping:
                raise RunInterrupted(where.interrupted())
    hold(steps)
    history.append(evaluate(steps, passes, sequences))
    with signals.writing():
        with durable.NamedAppend(metrics_path) as metrics:
            metrics.write(json.dumps(history[-1]) + "\n")
        trainer.save_checkpoint(str(out / "trained.safetensors"))
        durable.fsync_file(out / "trained.safetensors")
        summary = run_summary.write(out, run_summary.identity(config, mode="train", runtime=runtime, task=data.task.name), {
            **training_results(kind, history, baseline), "forward_passes": passes, "sequences": sequences,
            "eval_history": history, "mean_step_seconds": sum(times) / len(times) if times else None,
            "step_path": f"the exported P-RGE step through {runtime}", "rng": "counter",
            "data_fingerprint": fingerprint, "model_fingerprint": model_fingerprint,
            "wall_seconds": time.monotonic() - started, "resumed_after_step": state["step"] if state else 0})
    log(f"[prge] {runtime}: after {steps} steps: {kind.change(metrics_of(history[0]), metrics_of(history[-1]))}"
        + (f" ({baseline[0]})" if baseline else "") + f"; results in {out}")
    return summary


def _check_step(step: int, loss: float, grads, config: RunConfig, metrics_path: Path) -> None:
    """What the C++ trainer's loop refuses after a step: a non-finite loss or projected gradient
    (prge.train.check_finite), and at step 1 projected gradients that are all exactly 0, the
    exported step's sign of ±ε losses that are equal (as preflight.check_losses_differ)."""
    values = grads.tolist()
    check_finite(step, SimpleNamespace(loss=loss, projected_grads=values), metrics_path)
    if step == 1 and all(g == 0 for g in values):
        raise epsilon_too_small(config, step, "every projected gradient is exactly 0 (the ±ε losses are equal)")

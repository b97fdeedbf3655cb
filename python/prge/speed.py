"""Speed of one configured method: median time per training step, tokens/s and peak
memory, on random tokens of data.max_length at the model's real shape (weights random
when `shape` is given: speed does not depend on weight values). Used by `mode: speed`
sweeps, which measure every method of a table in one process so ratios are comparable."""
from __future__ import annotations

import gc
import json
import statistics
import time
from pathlib import Path

import torch

from prge._core import IGNORE_INDEX, CausalLM, RunConfig, TokenBatch, Trainer
from prge.models import shape_config
from prge import run_summary
from prge.run_dir import claim

SPEED_KEYS = {"warmup", "steps", "shape"}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def random_batch(vocab: int, batch: int, seq_len: int, seed: int = 0) -> TokenBatch:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (batch, seq_len), generator=g)
    targets = torch.full((batch, seq_len), IGNORE_INDEX, dtype=torch.int64)
    targets[:, -2] = ids[:, -1]  # one answer token per prompt, as in the classification tasks
    return TokenBatch(ids, targets)


def build_model(config: RunConfig, shape: str | None) -> CausalLM:
    if not shape:  # a real model: as `prge train` builds it (adapters, adapter.init_from)
        from prge.setup import setup_model

        return setup_model(config)
    model = CausalLM.random(shape_config(shape), 0, config.model.device, config.model.dtype,
                            config.model.quantize, config.model.group_size)
    model.gated_low_rank_kernel = config.model.gated_low_rank_kernel
    if config.use_adapter:
        model.attach_adapters(config.adapter)
        model.fold_lora_a = config.model.fold_lora_a
    return model


def run_speed(config: RunConfig, warmup: int = 2, steps: int = 5, shape: str | None = None,
              log=print, overwrite: bool = False) -> dict:
    from prge.preflight import check_names

    check_names(config, task=False, model=not shape)  # before the run directory
    with claim(config.run.output_dir, config.to_yaml(), overwrite) as out_dir:
        return _measure(config, out_dir, warmup, steps, shape, log)


def _measure(config: RunConfig, out_dir: Path, warmup: int, steps: int, shape: str | None, log) -> dict:
    device = config.model.device
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = build_model(config, shape)
    trainer = Trainer(model, config.estimator, config.optimizer, config.run.seed)
    batch = random_batch(model.spec.vocab_size, config.data.batch_size, config.data.max_length)
    for _ in range(warmup):
        result = trainer.step(batch)
    _sync(device)
    times = []
    with open(out_dir / "metrics.jsonl", "w") as metrics:
        for i in range(steps):
            start = time.perf_counter()
            result = trainer.step(batch)
            _sync(device)
            times.append(time.perf_counter() - start)
            metrics.write(json.dumps({"step": i + 1, "seconds": times[-1], "loss": result.loss}) + "\n")
    seconds = statistics.median(times)
    tokens = result.sequences * config.data.max_length
    summary = run_summary.write(out_dir, run_summary.identity(config, mode="speed", model=shape or config.model.name), {
        "seq_len": config.data.max_length,
        "forward_passes_per_step": result.forward_passes, "sequences_per_step": result.sequences,
        "step_seconds": seconds, "tokens_per_second": tokens / seconds,
        "peak_memory_gib": (torch.cuda.max_memory_allocated() / 2**30
                            if device.startswith("cuda") else None),
        "warmup": warmup, "timed_steps": steps,
    })
    log(f"[prge] {config.estimator.kind} q={config.estimator.queries} {config.estimator.parallel}: "
        f"{seconds * 1e3:.1f} ms/step, {summary['tokens_per_second']:.0f} tokens/s")
    del trainer, model
    return summary

"""summary.json: one schema for every run (training, speed, training through an exported
engine), one writer and one reader. A run's summary is its identity (what ran: the config
fields that name a run) plus its results; it is written atomically and last, so its presence
marks a finished run (sweeps skip such runs)."""
from __future__ import annotations

import platform
import time
from pathlib import Path

from prge import durable
from prge._core import canonical_parallelism

SCHEMA = 1
MODES = ("train", "speed")


def identity(config, *, mode: str, runtime: str = "eager", task: str | None = None, model: str | None = None) -> dict:
    """The fields every summary carries, from the run's config. quantize is the weight format
    loading used (RunConfig.load_quantize: 'dense' where full-parameter MeZO loads a checkpoint's
    own quantized blocks dequantized), group_size its group of input columns per scale (int8 /
    int4 only: 0 is one scale per output channel; None for the other formats). A training run
    of a custom task also records its data_files (prge.data.custom.data_files: each split's path
    and content sha256), by which a report tells custom tasks apart."""
    if mode not in MODES:
        raise ValueError(f"summary mode must be one of {MODES}, got {mode!r}")
    e, o = config.estimator, config.optimizer
    fields = {
        "schema": SCHEMA, "mode": mode, "runtime": runtime,
        "task": task if task is not None else config.data.task,
        "model": model if model is not None else config.model.name,
        "device": config.model.device, "dtype": config.model.dtype,
        "estimator": e.kind, "queries": e.queries, "parallel": e.parallel, "epsilon": e.epsilon,
        "optimizer": o.kind, "lr": o.lr, "batch_size": config.data.batch_size,
        "steps": config.run.steps, "seed": config.run.seed, "protocol": config.data.protocol,
        "quantize": config.load_quantize,
        "group_size": config.model.effective_group_size if config.load_quantize in ("int8", "int4") else None,
    }
    if mode == "train" and config.data.task == "custom":
        from prge.data.custom import data_files

        fields["data_files"] = data_files(config.data)
    return fields


def device_name(device: str) -> str:
    """The card or processor behind a run's `device` ("cuda", "cuda:1", "cpu"), so that step times
    measured on different machines are told apart: torch.cuda.get_device_name for a CUDA device
    (e.g. "NVIDIA H100 80GB HBM3"), else the CPU's model name (Linux's /proc/cpuinfo "model
    name", else platform.processor(), else the machine type, e.g. "x86_64")."""
    if str(device).startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(torch.device(device))
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:  # not Linux
        pass
    return platform.processor() or platform.machine() or "unknown"


def write(out_dir: Path, run_identity: dict, results: dict) -> dict:
    """Writes summary.json (run_identity, results, device_name(run_identity["device"]) and
    finished_at) into out_dir and returns it. Raises ValueError where results repeat an identity
    field."""
    clash = sorted(set(run_identity) & set(results))
    if clash:
        raise ValueError(f"summary results repeat identity fields: {clash}")
    summary = {**run_identity, **results, "device_name": device_name(run_identity["device"]),
               "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    durable.write_json(Path(out_dir) / "summary.json", summary)  # whole or not at all, fsynced
    return summary


def read(path: Path) -> dict:
    """A summary.json of any prge version, in the current names: summaries written before
    the schema existed (schema 0) are training runs of the eager runtime unless they say
    otherwise; the runtime was called "engine", parallel modes single / none."""
    path = Path(path)
    try:
        summary = durable.read_json(path, "summary.json")
    except OSError as e:
        raise ValueError(f"{path}: not a readable summary.json ({e.strerror or e})") from e
    if not isinstance(summary, dict):
        raise ValueError(f"{path}: summary.json must hold an object")
    summary.setdefault("schema", 0)
    summary.setdefault("mode", summary.get("mode", "train"))
    summary.setdefault("runtime", summary.pop("engine", "eager"))  # "engine" before 0.3
    if "parallel" in summary:  # written before the rename: single -> queries, none -> sequential
        summary["parallel"] = canonical_parallelism(str(summary["parallel"]))
    return summary

"""A run's resumable checkpoint, every run.checkpoint_every steps and on Ctrl-C:
checkpoint.safetensors (trained tensors, optimizer state, the trainer's step; written
atomically by the core) and checkpoint.json (step, data-order position, counters; written
atomically after it). The perturbations need no saved RNG state: z is regenerated from
(seed, step). Resuming restores all of it and cuts metrics.jsonl back to the checkpoint's step,
so the resumed run writes what an uninterrupted one would."""
from __future__ import annotations

import json
import os
from pathlib import Path

from prge.run_dir import RunDirError

TENSORS = "checkpoint.safetensors"
STATE = "checkpoint.json"


def exists(out_dir: Path) -> bool:
    return (Path(out_dir) / STATE).is_file()


def save(out_dir: Path, trainer, state: dict) -> None:
    trainer.save_checkpoint(str(out_dir / TENSORS))
    tmp = out_dir / (STATE + ".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, out_dir / STATE)


def load(out_dir: Path, trainer) -> dict:
    if not exists(out_dir):
        raise RunDirError(f"{out_dir}: nothing to resume (no {STATE}: the run wrote no checkpoint; "
                          "set run.checkpoint_every)")
    state = json.loads((out_dir / STATE).read_text())
    trainer.load_checkpoint(str(out_dir / TENSORS))
    if trainer.step_count != state["step"]:
        raise RunDirError(f"{out_dir}: {TENSORS} is at step {trainer.step_count}, {STATE} at step "
                          f"{state['step']}: the checkpoint is torn, resume is not possible")
    return state


def metrics_until(path: Path, step: int) -> list[dict]:
    """The records of metrics.jsonl up to `step`, with the file cut back to them."""
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                break  # a line cut by the kill
            if record.get("step", 0) > step:
                break
            records.append(record)
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(tmp, path)
    return records

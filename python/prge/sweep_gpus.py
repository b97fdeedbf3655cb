"""A sweep's runs spread over the GPUs of a machine: one run per GPU at a time, each a
`prge train` process that sees only its GPU (CUDA_VISIBLE_DEVICES), so that its config
(model.device: cuda) and results are those of the same run in a sequential sweep. Each run's
output goes to RUN_DIR.log beside its directory (a resumed run's is appended to); a failed run is
named at the end, after the others have finished; an interrupted sweep waits for its runs to
checkpoint (run_on_gpus)."""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prge.interrupts import stop_signals
from prge.run_dir import held_by_another, mark_failed, shown
from prge.run_summary import read as read_summary
from prge.whitespace import shown_value


def parse_gpus(text: str) -> list[str]:
    """'0,1,3' -> ['0', '1', '3']; 'all' -> every GPU torch sees."""
    if text.strip() == "all":
        import torch

        count = torch.cuda.device_count()
        if count == 0:
            raise ValueError("--gpus all: torch sees no CUDA GPU on this machine")
        return [str(i) for i in range(count)]
    gpus = [g.strip() for g in text.split(",")]
    if not all(g.isdigit() for g in gpus) or len(set(gpus)) != len(gpus):
        raise ValueError(f"--gpus {shown_value(text)}: expected distinct GPU indices like 0,1,2,3, or all")
    return gpus


BUSY = "busy"  # a run's outcome when another process holds its directory: left to it


def last_error(log_path: Path, start: int = 0) -> str | None:
    """The last `prge: error:` line of a run's log from byte `start` on (where this attempt's
    output begins), without that prefix; None without one."""
    try:
        with open(log_path, "rb") as f:
            f.seek(start)
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    errors = [line.removeprefix("prge: error: ") for line in lines if line.startswith("prge: error: ")]
    return errors[-1] if errors else None


def run_on_gpus(jobs: list[tuple[str, object, bool]], gpus: list[str], log=print) -> list[dict]:
    """jobs: (label, RunConfig, resume). Returns the finished runs' summaries in job order.

    A Ctrl-C or SIGTERM starts no further run and waits for the runs in flight: they got the
    signal too (a terminal, `timeout` without --foreground and job schedulers signal the whole
    process group) and stop after their step with a checkpoint. Each later signal is passed on to
    them, so a sweep signalled alone (`kill PID`, twice) stops its runs as well, and a second
    Ctrl-C stops them at once (prge.interrupts). Then RunInterrupted names the runs the same sweep
    resumes, and any run that had failed before. The sweep never ends while a run of it is still
    writing."""
    from prge import checkpoints
    from prge.train import RunInterrupted

    free: queue.Queue[str] = queue.Queue()
    for gpu in gpus:
        free.put(gpu)
    running: list[subprocess.Popen] = []
    guard = threading.RLock()  # the runs in flight; no run starts once a stop is requested (a handler may nest)

    def say(message: str) -> None:  # stdout's reader may be gone (`| tee`, stopped by the same Ctrl-C)
        try:
            log(message)
        except BrokenPipeError:
            pass

    def on_signal(signum, count: int) -> None:
        with guard:
            in_flight = [process for process in running if process.poll() is None]
            if count > 1:
                for process in in_flight:
                    process.send_signal(signum)
        what = signal.Signals(signum).name
        try:
            if count == 1:
                print(f"prge: {what}: no further run starts; the {len(in_flight)} run(s) in flight stop after their "
                      "step with a checkpoint (a signal sent to the sweep alone: send it again to pass it on)",
                      file=sys.stderr, flush=True)
            else:
                print(f"prge: {what} passed on to the {len(in_flight)} run(s) in flight", file=sys.stderr, flush=True)
        except (OSError, ValueError):  # stderr gone
            pass

    def run(job, config_dir: Path):
        label, config, resume = job
        out_dir = Path(config.run.output_dir)
        config_path = config_dir / f"{out_dir.name}.yaml"  # run directories have distinct names
        config_path.write_text(config.to_yaml())
        argv = [sys.executable, "-m", "prge", "train", str(config_path), "--no-progress",
                "--resume" if resume else "--overwrite"]
        log_path = out_dir.with_name(out_dir.name + ".log")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if held_by_another(out_dir):  # as the sequential sweep: left to that process, its log untouched
            say(f"[prge] {label}: another process is running it, skipping")
            return BUSY, log_path, False
        gpu = free.get()
        try:
            with guard:
                if signals.requested():
                    return None, log_path, None  # not started
                say(f"[prge] {label}: started on GPU {gpu} (output in {shown(log_path)})")
                with open(log_path, "a" if resume else "w") as out:  # a resumed run's log goes on
                    start = out.tell()
                    process = subprocess.Popen(argv, env={**os.environ, "CUDA_VISIBLE_DEVICES": gpu},
                                               stdout=out, stderr=subprocess.STDOUT)
                running.append(process)
                if signals.requested():  # the signal may have come before the process existed
                    process.send_signal(signal.SIGTERM)
            code = process.wait()
            ended = time.monotonic()
        finally:
            free.put(gpu)
        if code != 0 and (out_dir / "summary.json").is_file():  # finished, then stopped on its way out
            code = 0
        if code != 0 and held_by_another(out_dir):  # another process claimed it first
            say(f"[prge] {label}: another process is running it, skipping")
            return BUSY, log_path, False
        failed = code != 0 and not (signals.first_at is not None and ended >= signals.first_at)
        outcome = "finished" if code == 0 else f"failed (exit {code})" if failed else "stopped"
        say(f"[prge] {label}: {outcome} on GPU {gpu}")
        if failed:
            mark_failed(out_dir, f"{last_error(log_path, start) or f'exit {code}'} (see {shown(log_path)})")
        return code, log_path, failed

    with stop_signals(on_signal) as signals, \
            tempfile.TemporaryDirectory(prefix="prge-sweep-") as config_dir, \
            ThreadPoolExecutor(max_workers=len(gpus)) as pool:
        outcomes = list(pool.map(lambda job: run(job, Path(config_dir)), jobs))
    failed = [f"{label} (exit {code}; see {shown(log_path)})"
              for (label, _, _), (code, log_path, failure) in zip(jobs, outcomes) if failure]
    stopped = [(label, config, log_path)
               for (label, config, _), (code, log_path, failure) in zip(jobs, outcomes)
               if code and code != BUSY and not failure]
    waiting = sum(code is None for code, _, _ in outcomes)
    if stopped or waiting:
        def after(config) -> str:
            return "resumes from its checkpoint" if checkpoints.exists(config.run.output_dir) else "starts again"

        raise RunInterrupted(
            f"sweep interrupted: {len(stopped)} run(s) in flight stopped"
            + (f" ({'; '.join(f'{label} ({after(config)}; see {shown(log_path)})' for label, config, log_path in stopped)})"
               if stopped else "")
            + f", {waiting} not started" + (f"; {len(failed)} had failed before: {'; '.join(failed)}" if failed else "")
            + "; continue with the same `prge sweep` command")
    if failed:
        raise ValueError(f"{len(failed)} of {len(jobs)} runs failed: " + "; ".join(failed))
    return [read_summary(Path(config.run.output_dir) / "summary.json")
            for (_, config, _), (code, _, _) in zip(jobs, outcomes) if code == 0]

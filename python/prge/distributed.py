"""P-RGE and MeZO across processes with torch.distributed: `torchrun --nproc-per-node N -m prge
train CONFIG` (gloo on CPUs, NCCL on GPUs, one process per GPU).

The ranks form a grid of query groups x data groups (run.data_parallel data groups; the world
size divided by it, query groups). Every rank draws the same batch and the same z (both come
from the run's seed), evaluates the points of its query group's share of the q queries on its
data group's rows of the batch, and the ranks exchange only those losses: one all_gather of
O(q) floats per step. From the gathered losses every rank forms the same g and applies the same
update, so the trained tensors stay identical without ever being sent; a fingerprint of them is
compared across ranks every run.log_every steps to prove it.

    query parallel (data_parallel 1, the default): the same batch, q/N queries per rank;
    data parallel (data_parallel N): every query, b/N rows per rank, losses averaged by rows;
    both: N = query groups x data groups.

With one data group the arithmetic of every point is that of a single process (losses, g and
the final weights are bit-identical where the forward of a share computes its rows as the full
forward does); data groups average per-row means in float64, which differs from the single
process only in rounding."""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import sys
from dataclasses import dataclass

import torch

from prge._core import TokenBatch
from prge.run_dir import keyed_difference

# The seconds a rank waits for the others before the job ends with an error (`--rank-timeout`).
DEFAULT_TIMEOUT_SECONDS = 300


class RankFailure(RuntimeError):
    """Another rank died, hung past the timeout, or went out of step."""


def launched() -> bool:
    """Whether this process is one of several started by torchrun (or with its environment)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass(frozen=True)
class Grid:
    """Rank r is data group r % data_parallel of query group r // data_parallel."""
    rank: int
    world: int
    data_parallel: int = 1

    def __post_init__(self):
        if self.data_parallel < 1 or self.world % self.data_parallel:
            raise ValueError(f"run.data_parallel: {self.data_parallel} does not divide the {self.world} processes "
                             "of the job (query groups = processes / data_parallel)")

    @property
    def query_groups(self) -> int:
        return self.world // self.data_parallel

    @property
    def query_group(self) -> int:
        return self.rank // self.data_parallel

    @property
    def data_group(self) -> int:
        return self.rank % self.data_parallel

    def rank_of(self, query_group: int, data_group: int) -> int:
        return query_group * self.data_parallel + data_group

    def query_range(self, queries: int, group: int | None = None) -> tuple[int, int]:
        """[begin, end) of a query group's queries: contiguous, sizes differing by at most one."""
        return _split(queries, self.query_groups, self.query_group if group is None else group)

    def batch_rows(self, rows: int, group: int | None = None) -> tuple[int, int]:
        """[begin, end) of a data group's rows of the batch."""
        return _split(rows, self.data_parallel, self.data_group if group is None else group)

    def check(self, queries: int, batch_size: int) -> None:
        if queries < self.query_groups:
            raise ValueError(f"estimator.queries: {queries} queries cannot be shared by {self.query_groups} query "
                             f"groups ({self.world} processes / run.data_parallel {self.data_parallel}); raise "
                             "estimator.queries or run.data_parallel")
        if batch_size < self.data_parallel:
            raise ValueError(f"data.batch_size: {batch_size} rows cannot be shared by run.data_parallel "
                             f"{self.data_parallel} data groups")


def _split(n: int, parts: int, index: int) -> tuple[int, int]:
    size, extra = divmod(n, parts)
    begin = index * size + min(index, extra)
    return begin, begin + size + (index < extra)


def start(data_parallel: int, device: str, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> Grid:
    """Joins the job torchrun started (env:// rendezvous); NCCL when the model is on CUDA."""
    import torch.distributed as dist

    world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    grid = Grid(rank, world, data_parallel)
    if not dist.is_initialized():
        backend = "gloo"
        if device.startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            backend = "nccl"
        try:
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_seconds))
        except (RuntimeError, ValueError) as e:
            raise RankFailure(f"rank {rank}: could not join the other {world - 1} processes within "
                              f"{timeout_seconds:g} s: {_first_line(e)}") from e
    return grid


def device_for(device: str) -> str:
    """model.device for this process: cuda becomes the process's own GPU (LOCAL_RANK)."""
    if device.startswith("cuda") and launched():
        return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return device


def backend() -> str:
    import torch.distributed as dist

    return str(dist.get_backend()) if dist.is_initialized() else "none"


_left_a_group = False  # this process destroyed a process group it had joined (stop())


def stop() -> None:
    global _left_a_group
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
        _left_a_group = True


def end_process(code: int) -> None:
    """Ends a torchrun rank that has left its process group (stop()) now, with exit status
    `code`, after flushing stdout and stderr: no interpreter shutdown. With torch 2.13 and gloo,
    about one 2-process run in 20 aborted during interpreter shutdown after
    destroy_process_group had returned and every result was written ("terminate called without
    an active exception", SIGABRT), and torchrun reported the whole job failed. Every file prge
    writes is closed (and fsynced) before this point. Does nothing in other processes."""
    if not _left_a_group:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__


@dataclass
class Communicator:
    """The collectives of a run, each turning a dead or hung peer into a RankFailure."""
    grid: Grid
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS

    def _fail(self, what: str, error: BaseException) -> RankFailure:
        return RankFailure(f"rank {self.grid.rank}: {what}: no answer from the other ranks within "
                           f"{self.timeout_seconds:g} s, or one of them died ({_first_line(error)}); "
                           "the job stops here (a checkpoint, if any, resumes it)")

    def all_gather(self, tensor: torch.Tensor, what: str) -> torch.Tensor:
        """[world, *tensor.shape]: every rank's tensor, in rank order."""
        import torch.distributed as dist

        out = [torch.empty_like(tensor) for _ in range(self.grid.world)]
        try:
            dist.all_gather(out, tensor)
        except (RuntimeError, ValueError) as e:
            raise self._fail(what, e) from e
        return torch.stack([t.cpu() for t in out])

    def gather_objects(self, value, what: str) -> list:
        import torch.distributed as dist

        out = [None] * self.grid.world
        try:
            dist.all_gather_object(out, value)
        except (RuntimeError, ValueError) as e:
            raise self._fail(what, e) from e
        return out

    def barrier(self, what: str) -> None:
        self.gather_objects(None, what)


def check_agreement(comm: Communicator, what: str, value) -> None:
    """Every rank's `what` ("config": its to_yaml() text; "data": its data fingerprint, split ->
    hash) equals rank 0's, by one all_gather of sha256 digests (the same size on every rank,
    whatever the values). On a mismatch every rank raises RankFailure naming the ranks and the
    first differing key, before any collective whose size depends on the config."""
    import torch.distributed as dist

    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    digest = torch.tensor(list(hashlib.sha256(text.encode()).digest()), dtype=torch.uint8)
    if dist.is_initialized() and str(dist.get_backend()) == "nccl":
        digest = digest.to(f"cuda:{torch.cuda.current_device()}")
    everyone = comm.all_gather(digest, f"the {what} check")
    differing = [r for r in range(comm.grid.world) if not torch.equal(everyone[r], everyone[0])]
    if not differing:
        return
    values = comm.gather_objects(value, f"the {what} check")
    key, mine, theirs = keyed_difference(values[0], values[differing[0]])
    other = "another config" if what == "config" else f"other {what}"
    raise RankFailure(f"rank(s) {differing} run with {other} than rank 0 (first difference: {key}: "
                      f"{mine} on rank 0, {theirs} on rank {differing[0]}); every rank must read the same config, "
                      "--set values and data files; the job stops before training")


# After a share's losses, a rank's payload carries these (float64 each).
PAYLOAD_TAIL = ("rows", "forward_passes", "sequences", "interrupted")


def payload_width(grid: Grid, queries: int, central: bool) -> int:
    """Float64 values each rank sends per step: the largest share's losses (smaller shares
    are NaN-padded), then PAYLOAD_TAIL."""
    share = -(-queries // grid.query_groups)  # query_range: sizes differ by at most one
    return (2 * share if central else share + 1) + len(PAYLOAD_TAIL)


@dataclass
class StepRecord:
    """A distributed step as the training loop reads it (StepResult's fields)."""
    loss: float
    projected_grads: list
    losses: list
    forward_passes: int  # batched forwards of one rank: the step's critical path
    sequences: int       # every rank's sequences together
    seconds: float
    stop: bool           # some rank was interrupted (Ctrl-C): every rank stops after this step


class DistributedStep:
    """One step of the grid: this rank's share of the points, one all_gather, the update."""

    def __init__(self, trainer, communicator: Communicator, queries: int, central: bool, device: str):
        self.trainer, self.comm, self.queries, self.central = trainer, communicator, queries, central
        self.begin, self.end = communicator.grid.query_range(queries)
        self.width = payload_width(communicator.grid, queries, central)
        self.device = device if device.startswith("cuda") else "cpu"
        self.interrupted = lambda: False

    @property
    def bytes_per_step(self) -> int:
        """Payload bytes every rank contributes to a step's all_gather."""
        return self.width * 8

    def __call__(self, batch: TokenBatch) -> StepRecord:
        import time

        start = time.perf_counter()
        grid, rows = self.comm.grid, batch.input_ids.size(0)
        lo, hi = grid.batch_rows(rows)
        local = TokenBatch(batch.input_ids[lo:hi], batch.targets[lo:hi])
        # θ of a forward difference: query group 0 evaluates it, once for the step.
        losses, passes, sequences = self.trainer.evaluate_share(local, self.begin, self.end,
                                                                center=grid.query_group == 0)
        payload = torch.full((self.width,), float("nan"), dtype=torch.float64)
        payload[:len(losses)] = torch.tensor(losses, dtype=torch.float64)
        tail = len(PAYLOAD_TAIL)
        payload[-tail:] = torch.tensor([hi - lo, passes, sequences, float(self.interrupted())], dtype=torch.float64)
        step = self.trainer.step_count + 1
        gathered = self.comm.all_gather(payload.to(self.device), f"step {step}")
        result = self.trainer.apply_losses(self.combine(gathered, rows))
        return StepRecord(result.loss, list(result.projected_grads), list(result.losses),
                          int(gathered[:, -3].max().item()), int(gathered[:, -2].sum().item()),
                          time.perf_counter() - start, bool(gathered[:, -1].any().item()))

    def combine(self, gathered: torch.Tensor, rows: int) -> list[float]:
        """Every point's loss in the single-process order, from [world, width] payloads: each
        query group's points, averaged over its data groups by rows (float64)."""
        grid = self.comm.grid
        plus, minus, center = [], [], None
        for group in range(grid.query_groups):
            begin, end = grid.query_range(self.queries, group)
            n = 2 * (end - begin) if self.central else end - begin + (group == 0)
            points = None
            for data in range(grid.data_parallel):
                row = gathered[grid.rank_of(group, data)]
                weighted = row[:n] if grid.data_parallel == 1 else row[:n] * (row[-len(PAYLOAD_TAIL)] / rows)
                points = weighted if points is None else points + weighted
            values = points.tolist()
            if self.central:
                plus += values[: end - begin]
                minus += values[end - begin:]
            else:  # query group 0 leads with θ
                if group == 0:
                    center, values = values[0], values[1:]
                plus += values
        return plus + minus if self.central else [center] + plus


def fingerprint(tensors: list[torch.Tensor]) -> torch.Tensor:
    """[2] float64: sum and sum of squares of the trained tensors; equal on ranks whose
    tensors are equal (same values, same reduction)."""
    total = torch.zeros(2, dtype=torch.float64)
    for t in tensors:
        t = t.detach().double()
        total += torch.stack([t.sum(), (t * t).sum()]).cpu()
    return total


def check_in_step(comm: Communicator, tensors: list[torch.Tensor], step: int, device: str) -> None:
    """Every rank's trained tensors equal rank 0's (by fingerprint), or a RankFailure."""
    mine = fingerprint(tensors)
    everyone = comm.all_gather(mine.to(device), f"step {step} (weights check)")
    differing = [r for r in range(comm.grid.world) if not torch.equal(everyone[r], everyone[0])]
    if differing:
        raise RankFailure(f"step {step}: the trained weights of rank(s) {differing} differ from rank 0's "
                          f"(fingerprints {everyone[differing[0]].tolist()} vs {everyone[0].tolist()}): "
                          "the ranks went out of step; the run stops (resume from the last checkpoint)")


@dataclass(frozen=True)
class Shard:
    """Evaluation split by whole chunks over the ranks (each chunk computed as a single
    process computes it), then gathered."""
    comm: Communicator

    def mine(self, items: list) -> list:
        return items[self.comm.grid.rank::self.comm.grid.world]

    def gather(self, results: dict, what: str = "evaluation") -> dict:
        merged = {}
        for part in self.comm.gather_objects(results, what):
            merged.update(part)
        return merged

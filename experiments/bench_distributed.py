"""Distributed P-RGE: step time and bytes communicated against the number of processes.

Every rank holds the model (random weights of a named shape, same seed), evaluates its share
of the step with prge.distributed.DistributedStep (its queries and/or its rows of the batch),
and the ranks exchange the losses in one all_gather. The world-size-1 rows are measured in the
same run: the single-process step (trainer.step) and the split path on one rank.

    python experiments/bench_distributed.py --shape smollm2-135m --seq-len 64 --queries 4 \
        --batch 2 --world-sizes 1,2,4 --out experiments/results      # CPUs, gloo
    python experiments/bench_distributed.py --gather-only --world-sizes 2,4,8 ...  # latency only

On CUDA (NCCL) each rank takes GPU `rank`; with one GPU only world size 1 runs there. Every row
runs the same number of steps on the same batch from the same start, so its final B is compared
with the one-process row's (0 = bit-identical)."""
from __future__ import annotations

import argparse
import os
import platform
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from bench_step import timed as median_seconds  # median of timed steps after warm-up


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gather_latency(comm, width: int, device: str, reps: int = 200) -> float:
    payload = torch.zeros(width, dtype=torch.float64, device=device)
    return median_seconds(lambda: comm.all_gather(payload, "latency"), 10, reps, device)


def worker(rank: int, world: int, data_parallel: int, args, port: int, out) -> None:
    import torch.distributed as dist

    import prge
    from prge.distributed import Communicator, DistributedStep, Grid, payload_width
    from prge.models import shape_config
    from prge.speed import random_batch

    torch.set_num_threads(args.threads)
    device = f"cuda:{rank}" if args.device == "cuda" else "cpu"
    if device.startswith("cuda"):
        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo",
                            init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    comm = Communicator(Grid(rank, world, data_parallel))
    if args.gather_only:
        central_width = payload_width(comm.grid, args.queries, central=True)
        latency = gather_latency(comm, central_width, device)
        out.put({"rank": rank, "latency": latency, "bytes": central_width * 8})
        dist.destroy_process_group()
        return
    config = shape_config(args.shape)
    model = prge.CausalLM.random(config, 0, device, args.dtype)
    model.attach_adapters(prge.AdapterOptions(rank=16, alpha=32))
    trainer = prge.Trainer(model, prge.EstimatorOptions("prge", args.queries, 1e-2, "central", "dual", rng="counter"),
                           prge.OptimizerOptions(lr=1e-4), 0)
    batch = random_batch(config.vocab_size, args.batch, args.seq_len)
    step = DistributedStep(trainer, comm, args.queries, True, device)
    row = {"rank": rank, "split": median_seconds(lambda: step(batch), args.warmup, args.steps, device),
           "latency": gather_latency(comm, step.width, device), "bytes": step.bytes_per_step}
    if rank == 0:  # B after the same warmup + steps steps in every row: compared with 1 process
        row["b"] = torch.cat([a["lora_b"].flatten() for a in model.adapters()]).cpu()
    if world == 1:  # the single-process step, same process, same model
        row["single"] = median_seconds(lambda: trainer.step(batch), args.warmup, args.steps, device)
    out.put(row)
    dist.destroy_process_group()


def measure(world: int, data_parallel: int, args) -> dict:
    ctx = mp.get_context("spawn")
    out, port = ctx.Queue(), free_port()
    procs = [ctx.Process(target=worker, args=(r, world, data_parallel, args, port, out)) for r in range(world)]
    for p in procs:
        p.start()
    rows = [out.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join()
    rows.sort(key=lambda r: r["rank"])
    final_b = rows[0].pop("b", None)
    return {"b": final_b, "world": world, "data_parallel": data_parallel, **{k: max(r.get(k, 0) for r in rows) for k in rows[0]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="smollm2-135m")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--queries", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--world-sizes", default="1,2,4")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--gather-only", action="store_true", help="only the all_gather latency of the payload")
    parser.add_argument("--out", help="directory for the Markdown table")
    args = parser.parse_args()
    worlds = [int(w) for w in args.world_sizes.split(",")]
    rows = []
    for world in worlds:
        layouts = [1] if world == 1 or args.gather_only else [1, world] + ([2] if world == 4 else [])
        for data_parallel in layouts:
            if data_parallel > args.batch or world // data_parallel > args.queries:
                continue  # rows or queries too few to share
            row = measure(world, data_parallel, args)
            rows.append(row)
            print({k: v for k, v in row.items() if k != "b"}, flush=True)
    cores = os.cpu_count()
    what = "all_gather latency" if args.gather_only else f"{args.shape}, T={args.seq_len}, q={args.queries}, b={args.batch}"
    lines = [f"# Distributed P-RGE dual on {args.device} ({what})", "",
             f"{platform.node()}, {cores} cores, torch {torch.__version__}, {args.threads} thread(s) per rank, "
             f"{args.dtype}; medians of {args.steps} steps after {args.warmup} warm-up.", ""]
    if args.gather_only:
        lines += ["| processes | payload per rank (bytes) | all_gather latency (us) |", "|---|---|---|"]
        lines += [f"| {r['world']} | {r['bytes']} | {r['latency'] * 1e6:.1f} |" for r in rows if r["data_parallel"] == 1]
    else:
        base = next(r for r in rows if r["world"] == 1)
        lines += ["| processes | query groups x data groups | step (s) | speed-up vs 1 process (same run) | "
                  "payload per rank per step (bytes) | received per rank per step (bytes) | all_gather alone (us) | "
                  "final B vs 1 process: max abs diff / max abs B |",
                  "|---|---|---|---|---|---|---|---|"]
        lines.append(f"| 1, trainer.step | 1 x 1 | {base['single']:.3f} | 1.00 | 0 | 0 | - | - |")
        for r in rows:
            groups = f"{r['world'] // r['data_parallel']} x {r['data_parallel']}"
            b_diff = ((r["b"] - base["b"]).abs().max() / base["b"].abs().max()).item()
            lines.append(f"| {r['world']} | {groups} | {r['split']:.3f} | {base['single'] / r['split']:.2f} | "
                         f"{r['bytes']} | {r['bytes'] * r['world']} | {r['latency'] * 1e6:.1f} | {b_diff:.2g} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        name = "distributed_gather" if args.gather_only else f"distributed_{args.shape}_T{args.seq_len}_q{args.queries}"
        path = Path(args.out) / f"bench_{name}_{args.device}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()

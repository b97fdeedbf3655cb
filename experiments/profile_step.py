"""Where a P-RGE step's GPU time goes: torch.profiler's kernel table for prge's inference
forward of the 32 sequences, for the fused P-RGE dual step (uncaptured, so each kernel is
listed) and, with --peer, for the torch.compile'd transformers forward of the same sequences
(the benchmark's floor), at one bench_step.py shape. A diagnosis tool beside the benchmark, not a benchmark:
the profiler adds its own overhead, so read the shares, not the totals.

    python experiments/profile_step.py --shape tinyllama-1.1b --seq-len 256 --out DIR
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import prge
from prge.models import SHAPES, shape_config
from prge.speed import random_batch

QB = 16


def kernel_table(fn, steps: int, rows: int) -> str:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    transient = (torch.cuda.max_memory_allocated() - before) / 2**20
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_time_total > 0]
    total = sum(e.self_device_time_total for e in events)
    events.sort(key=lambda e: e.self_device_time_total, reverse=True)
    lines = [f"total kernel time per call: {total / steps / 1e3:.2f} ms; memory held before a call "
             f"{before / 2**20:.0f} MiB, allocated on top of it during one: {transient:.0f} MiB", "",
             "| share | ms / call | calls / call | kernel |", "|---|---|---|---|"]
    for e in events[:rows]:
        lines.append(f"| {100 * e.self_device_time_total / total:.1f} % | {e.self_device_time_total / steps / 1e3:.3f} "
                     f"| {e.count // steps} | {e.key[:110]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tinyllama-1.1b")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--queries", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--peer", action="store_true", help="also profile the compiled transformers forward")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    config = shape_config(args.shape)
    model = prge.CausalLM.random(config, 0, "cuda", args.dtype)
    model.attach_adapters(prge.AdapterOptions(rank=16, alpha=32))
    ids = random_batch(config.vocab_size, 2 * QB, args.seq_len).input_ids.cuda()
    trainer = prge.Trainer(model, prge.EstimatorOptions("prge", args.queries, 1e-2, "central", "dual", rng="counter"),
                           prge.OptimizerOptions(lr=5e-5), 0, cuda_graphs=False)
    batch = random_batch(config.vocab_size, QB // args.queries, args.seq_len)
    text = (f"# {args.shape}, T = {args.seq_len}, {args.dtype}, {torch.cuda.get_device_name()}, "
            f"prge cuda kernels: {prge.cuda_built}\n\n"
            f"## prge inference forward, {2 * QB} sequences\n\n{kernel_table(lambda: model.hidden_states(ids), args.steps, args.rows)}\n\n"
            f"## P-RGE dual q = {args.queries} step, uncaptured\n\n{kernel_table(lambda: trainer.step(batch), args.steps, args.rows)}\n")
    if args.peer:
        from peers import TransformersForward, transformers_model

        hf = transformers_model(config, getattr(torch, args.dtype), "cuda")
        targets = random_batch(config.vocab_size, 2 * QB, args.seq_len).targets.cuda()
        floor = TransformersForward(hf, ids, targets, "default")
        text += f"\n## transformers forward, torch.compile (default mode), {2 * QB} sequences\n\n" \
                f"{kernel_table(floor, args.steps, args.rows)}\n"
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"profile_{args.shape}_T{args.seq_len}.md").write_text(text)


if __name__ == "__main__":
    main()

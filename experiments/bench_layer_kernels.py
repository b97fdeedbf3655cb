"""prge's memory-bound layer kernels (SwiGLU, RoPE, residual add + RMSNorm) against ATen eager and
torch.compile (default mode: Inductor's fused Triton kernels, what the compiled transformers
forward runs) at a model shape's sizes, 32 sequences of --seq-len tokens, all in the same run;
and against the same bytes copied by one device-to-device copy (the memory bound).

    python experiments/bench_layer_kernels.py --shape qwen2.5-1.5b --shape llama3.2-1b --out DIR

Prints, and writes to DIR/bench_layer_kernels.md, one table row per kernel and implementation:
microseconds a call (median over repeats of the mean over --iters calls captured in one CUDA
graph, CUDA events), GB/s of the bytes the op must move, time / prge's, time / the copy of the same
bytes, and the fraction of output elements equal to ATen eager's. A benchmark, not a check: experiments/gpu_checks.py
(check_kernels_vs_aten) holds the tolerances.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

import prge
from gpu_checks import aten_rope, aten_swiglu  # the ATen forms the kernels are checked against
from prge.models import SHAPES

SEQUENCES = 32


def time_call(fn, iters: int, repeats: int) -> tuple[float, bool]:
    """Median over `repeats` of the mean microseconds of `iters` calls of fn, and whether they ran
    as one CUDA graph (the GPU's time alone, no launch or torch.compile guard overhead; a kernel of
    ~15 us is as short as those); fn's own calls, timed with CUDA events, where capture fails."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            for _ in range(iters):
                fn()
        run, graphed = graph.replay, True
    except Exception:  # capture refused (an op that syncs, a compiled graph that will not record)
        torch.cuda.synchronize()
        graph, graphed = None, False

        def run():
            for _ in range(iters):
                fn()
    run()
    torch.cuda.synchronize()
    means = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        means.append(start.elapsed_time(end) * 1e3 / iters)
    return statistics.median(means), graphed


def copy_of(nbytes: int):
    """A device-to-device copy moving `nbytes` in all (half read, half written)."""
    src = torch.empty(nbytes // 2, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


def cases(shape: dict, seq_len: int, dtype: torch.dtype, generator: torch.Generator):
    """(kernel, bytes moved, {implementation: fn}) per kernel; torch.compile with static shapes."""
    kernels = prge._core.layer_kernels
    rows, d, f = SEQUENCES * seq_len, shape["hidden_size"], shape["intermediate_size"]
    heads = shape["num_attention_heads"]
    hd = shape.get("head_dim") or d // heads
    size = torch.finfo(dtype).bits // 8

    def randn(*sizes):
        return torch.randn(*sizes, generator=generator, device="cuda").to(dtype)

    gate_up = randn(rows, 2 * f)

    def swiglu_eager():
        return aten_swiglu(gate_up)

    yield ("SwiGLU", rows * 3 * f * size,
           {"prge": lambda: kernels.swiglu(gate_up), "ATen eager": swiglu_eager,
            "torch.compile": torch.compile(swiglu_eager, dynamic=False)})

    x = randn(SEQUENCES, seq_len, heads, hd).transpose(1, 2)  # [n, h, t, hd], as the model's q
    cos, sin = randn(seq_len, hd), randn(seq_len, hd)

    def rope_eager():
        return aten_rope(x, cos, sin)

    yield ("RoPE (q)", 2 * x.numel() * size,
           {"prge": lambda: kernels.rope(x, cos, sin), "ATen eager": rope_eager,
            "torch.compile": torch.compile(rope_eager, dynamic=False)})

    residual, delta, weight = randn(rows, d), randn(rows, d), randn(d)

    def norm_eager():  # in place on residual, as the kernel
        residual.add_(delta)
        return torch.rms_norm(residual, (d,), weight, 1e-6)

    yield ("residual add + RMSNorm", 4 * rows * d * size,
           {"prge": lambda: kernels.add_rms_norm_(residual, delta, weight, 1e-6), "ATen eager": norm_eager,
            "torch.compile": torch.compile(norm_eager, dynamic=False)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", action="append", choices=sorted(SHAPES),
                        help="repeatable (default: qwen2.5-1.5b)")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available() or not prge.cuda_built:
        raise SystemExit("bench_layer_kernels: needs a CUDA device and prge built with its CUDA kernels")
    dtype = getattr(torch, args.dtype)
    generator = torch.Generator(device="cuda").manual_seed(0)
    lines = [f"# prge layer kernels against ATen and torch.compile, {torch.cuda.get_device_name()}, {args.dtype}, "
             f"{SEQUENCES} sequences x {args.seq_len} tokens", "",
             f"torch {torch.__version__}; median of {args.repeats} means of {args.iters} calls replayed as one CUDA "
             "graph; 'copy' is one device-to-device copy moving the op's bytes (its read plus its write).", "",
             "| shape | kernel | implementation | us / call | GB/s | time / prge | time / copy | equal to ATen eager |",
             "|---|---|---|---|---|---|---|---|"]
    for shape_name in args.shape or ["qwen2.5-1.5b"]:
        torch._dynamo.reset()  # each shape compiles its own static-shape kernels
        for kernel, nbytes, fns in cases(SHAPES[shape_name], args.seq_len, dtype, generator):
            copy_us, _ = time_call(copy_of(nbytes), args.iters, args.repeats)
            timed = {name: time_call(fn, args.iters, args.repeats) for name, fn in fns.items()}
            times = {name: us for name, (us, _) in timed.items()}
            if kernel.startswith("residual"):
                equal = {name: "-" for name in fns}  # in place: each call adds delta again
            else:
                want = fns["ATen eager"]()
                equal = {name: f"{(fn() == want).float().mean().item():.4f}" for name, fn in fns.items()}
            for name, us in times.items():
                label = name if timed[name][1] else f"{name} (not graphed: launch overhead included)"
                lines.append(f"| {shape_name} | {kernel} | {label} | {us:.1f} | {nbytes / us / 1e3:.0f} | "
                             f"{us / times['prge']:.2f} | {us / copy_us:.2f} | {equal[name]} |")
            lines.append(f"| {shape_name} | {kernel} | copy of the same bytes | {copy_us:.1f} | "
                         f"{nbytes / copy_us / 1e3:.0f} | {copy_us / times['prge']:.2f} | 1.00 | - |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_layer_kernels.md").write_text(text)


if __name__ == "__main__":
    main()

"""The gated LoRA activation kernel against the ATen ops it replaces, at one MLP's shape (GPU).

A P-RGE forward's gate/up projection used to run as: the low-rank term scaling * (A x) B_c^T of
every copy c into the [rows, 2f] output (bmm, beta = 0), the frozen GEMM x W^T added into it
(beta = 1), then SwiGLU. With the kernel: the frozen GEMM alone (beta = 0), then one pass that
adds the term on the tensor cores and applies the activation. Both are timed in one process,
with CUDA events over many repetitions, and reported as a ratio.

    python experiments/bench_gated_low_rank.py [--rows 8192] [--hidden 1536] [--f 8960]
        [--rank 32] [--copies 32] [--dtype bfloat16]   (defaults: Qwen2.5-1.5B, T = 256, q = 16)
"""
from __future__ import annotations

import argparse

import torch

import prge


def timed(fn, repeats: int) -> float:
    """Milliseconds per call: the median of `repeats` CUDA-event timings after 3 warm-up calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--hidden", type=int, default=1536)
    parser.add_argument("--f", type=int, default=8960)
    parser.add_argument("--rank", type=int, default=32, help="summed rank of gate's and up's adapters")
    parser.add_argument("--copies", type=int, default=32)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    if not prge.cuda_built or not torch.cuda.is_available():
        print("prge was built without CUDA or no GPU is visible")
        return 2
    kernels = prge._core.layer_kernels
    dtype = getattr(torch, args.dtype)
    g = torch.Generator(device="cuda").manual_seed(0)

    def randn(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g, device="cuda")).to(dtype)

    rows, f, rank, copies = args.rows, args.f, args.rank, args.copies
    x, w = randn(rows, args.hidden), randn(2 * f, args.hidden, scale=0.02)
    ax, stack = randn(rows, rank), randn(copies, 2 * f, rank, scale=0.01)
    y = torch.empty(rows, 2 * f, device="cuda", dtype=dtype)

    def before():
        y3 = y.view(copies, rows // copies, 2 * f)
        torch.baddbmm(y3, ax.view(copies, rows // copies, rank), stack.transpose(1, 2), beta=0.0, alpha=2.0, out=y3)
        y.addmm_(x, w.t())
        return kernels.swiglu(y)

    def after():
        return kernels.gated_low_rank(torch.mm(x, w.t()), ax, stack, 2.0, "silu")

    frozen = torch.mm(x, w.t())
    w_gate, w_up = w[:f], w[f:]

    def split_gemms():  # gate's and up's GEMMs, each into its half of the [rows, 2f] output
        torch.mm(x, w_gate.t(), out=y[:, :f])
        torch.mm(x, w_up.t(), out=y[:, f:])
        return y

    def before_split():
        y3 = y.view(copies, rows // copies, 2 * f)
        torch.baddbmm(y3, ax.view(copies, rows // copies, rank), stack.transpose(1, 2), beta=0.0, alpha=2.0, out=y3)
        y[:, :f].addmm_(x, w_gate.t())
        y[:, f:].addmm_(x, w_up.t())
        return kernels.swiglu(y)

    rows_out = [
        ("term bmm + frozen GEMM (beta 1) + SwiGLU", timed(before, args.repeats)),
        ("frozen GEMM (beta 0) + gated LoRA activation", timed(after, args.repeats)),
        ("frozen GEMM alone (beta 0)", timed(lambda: torch.mm(x, w.t()), args.repeats)),
        ("gate's and up's GEMMs into the halves (beta 0)", timed(split_gemms, args.repeats)),
        ("term bmm + the two GEMMs (beta 1) + SwiGLU", timed(before_split, args.repeats)),
        ("SwiGLU kernel alone", timed(lambda: kernels.swiglu(frozen), args.repeats)),
        ("gated LoRA activation kernel alone", timed(lambda: kernels.gated_low_rank(frozen, ax, stack, 2.0, "silu"),
                                                      args.repeats)),
    ]
    print(f"{torch.cuda.get_device_name()}, {args.dtype}, rows {rows}, hidden {args.hidden}, f {f}, rank {rank}, "
          f"copies {copies}")
    base = rows_out[0][1]
    for name, ms in rows_out:
        print(f"{name:48s} {ms * 1000:9.1f} us  {ms / base:5.2f} x the first row")
    diff = (before().float() - after().float()).abs().max() / before().float().abs().max()
    split = (before().float() - before_split().float()).abs().max() / before().float().abs().max()
    print(f"outputs: max |diff| / max |before| = {diff.item():.3g} (fused kernel), {split.item():.3g} (split GEMMs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

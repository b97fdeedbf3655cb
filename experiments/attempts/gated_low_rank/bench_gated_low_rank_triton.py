"""Probe for issue 22 item 6, second try at session 17's idea in Triton: gate/up's LoRA term added
inside the gated activation, so that the [rows, 2f] term never goes through memory. (A probe, not
part of prge.)

P-RGE's dual step evaluates C = 2q copies of the batch (R = rows / C rows each); copy c's gate and
up projections carry B_c. prge today: the term scaling * U_c B_cᵀ (U = x Aᵀ, [rows, 2r]; B_c
block-diagonal [2f, 2r]: gate's rows use U's first r columns, up's rows the last r) is written by
one batched GEMM, cuBLAS's frozen GEMM adds x Wᵀ into it (beta = 1), then SwiGLU reads the sum.
Session 17's CUDA kernel (mma.sync, cp.async; gated_low_rank.cu) did the term inside the activation
and took 294-300 us against the plain SwiGLU kernel's 134-138 us at Qwen2.5-1.5B's MLP, so it saved
nothing. Its traffic is the plain kernel's (read gate and up, write h; U and B_c are small), so a
kernel that streams at the plain kernel's rate would save the whole term (~120-170 us a layer).
This one is Triton: a [BLOCK_M, BLOCK_N] tile of h reads its gate and up tiles, adds U_tile B_c,tileᵀ
(tl.dot, K = r, the block-diagonal stack read through two strided views, no zeros multiplied) in
float32, rounds each sum to the output dtype as the present path's GEMM does, and applies SiLU x up.

Timed per q (1, 4, 16) at a model shape's MLP (32 sequences of --seq-len tokens), one process,
CUDA events over a CUDA graph of --iters calls, microseconds a call:
  frozen GEMM + SwiGLU        the forward without adapters (the goal's baseline)
  present path                term bmm + frozen GEMM (beta = 1) + prge's SwiGLU kernel
  frozen GEMM + fused         cuBLAS's frozen GEMM (beta = 0), then this kernel
  prge SwiGLU / Triton plain / Triton fused   the activation kernels alone
Before the timings the fused kernel is checked against the present path (bf16) and, on the CPU
(TRITON_INTERPRET=1 --check-only, float32), against ATen.

    python experiments/attempts/gated_low_rank/bench_gated_low_rank_triton.py --shape qwen2.5-1.5b --shape llama3.2-1b
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

from prge.models import SHAPES

SEQUENCES = 32
RANK = 16  # each adapter's r (paper recipe); the fused gate/up stack's summed rank is 2 r
SCALING = 2.0  # alpha / r = 32 / 16


def configs():
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
            for bm, bn, w, s in [(64, 64, 4, 2), (64, 128, 4, 2), (128, 64, 4, 2), (128, 128, 8, 2),
                                 (32, 128, 4, 2), (64, 256, 8, 2), (128, 128, 4, 3)]]


@triton.autotune(configs=configs() if not os.environ.get("TRITON_INTERPRET") else
                 [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16})], key=["M", "F", "rows_per_copy", "HAS_TERM"])
@triton.jit
def gated_low_rank(gu_ptr, u_ptr, b_ptr, h_ptr, M, F, rows_per_copy, scaling,
                   stride_gu, stride_u, stride_bc, stride_bn, stride_h,
                   R: tl.constexpr, HAS_TERM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """h = silu(g) * u with g = gate + scaling U_g B_c,gateᵀ, u = up + scaling U_u B_c,upᵀ, each sum
    rounded to h's dtype first. gate_up [M, 2F] (gate then up), U [M, 2R] (gate's R columns, then
    up's), B [C, 2F, 2R] block-diagonal; M, F multiples of the blocks, rows_per_copy of BLOCK_M."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rows = offs_m[:, None] * stride_gu
    gate = tl.load(gu_ptr + rows + offs_n[None, :])
    up = tl.load(gu_ptr + rows + F + offs_n[None, :])
    if HAS_TERM:
        copy = (pid_m * BLOCK_M) // rows_per_copy
        offs_r = tl.arange(0, R)
        u_rows = u_ptr + offs_m[:, None] * stride_u + offs_r[None, :]
        b_gate = b_ptr + copy * stride_bc + offs_n[None, :] * stride_bn + offs_r[:, None]  # [R, BLOCK_N]
        b_up = b_gate + F * stride_bn + R  # up's rows of the stack, its R columns
        term_gate = tl.dot(tl.load(u_rows), tl.load(b_gate))
        term_up = tl.dot(tl.load(u_rows + R), tl.load(b_up))
        gate = (gate.to(tl.float32) + scaling * term_gate).to(h_ptr.dtype.element_ty)
        up = (up.to(tl.float32) + scaling * term_up).to(h_ptr.dtype.element_ty)
    g = gate.to(tl.float32)
    h = g / (1.0 + tl.exp(-g)) * up.to(tl.float32)
    tl.store(h_ptr + offs_m[:, None] * stride_h + offs_n[None, :], h.to(h_ptr.dtype.element_ty))


def fused(gate_up, u=None, stack=None, rows_per_copy=None):
    """gate_up [M, 2F], u [M, 2r], stack [C, 2F, 2r] -> h [M, F] in gate_up's dtype (no term when u is None)."""
    M, F = gate_up.shape[0], gate_up.shape[1] // 2
    h = torch.empty(M, F, device=gate_up.device, dtype=gate_up.dtype)
    has_term = u is not None
    if not has_term:
        u, stack, rows_per_copy = gate_up, gate_up.unsqueeze(0), M  # unused
    r = u.shape[1] // 2 if has_term else 16
    assert gate_up.stride(1) == 1 and u.stride(1) == 1 and stack.stride(2) == 1

    def grid(meta):
        for dim, block in ((M, meta["BLOCK_M"]), (F, meta["BLOCK_N"]), (rows_per_copy, meta["BLOCK_M"])):
            assert dim % block == 0, (dim, block)
        return (M // meta["BLOCK_M"], F // meta["BLOCK_N"])

    gated_low_rank[grid](gate_up, u, stack, h, M, F, rows_per_copy, SCALING, gate_up.stride(0), u.stride(0),
                         stack.stride(0), stack.stride(1), h.stride(0), R=r, HAS_TERM=has_term)
    return h


def block_diagonal_stack(copies, f, r, device, dtype, g):
    stack = torch.zeros(copies, 2 * f, 2 * r)
    stack[:, :f, :r] = torch.randn(copies, f, r, generator=g) * 0.05
    stack[:, f:, r:] = torch.randn(copies, f, r, generator=g) * 0.05
    return stack.to(device=device, dtype=dtype)


def present_gate_up(x, w, u, stack, rows_per_copy):
    """prge's path: the term by one batched GEMM, the frozen GEMM adds into it (beta = 1)."""
    copies = x.shape[0] // rows_per_copy
    y = torch.empty(x.shape[0], w.shape[0], device=x.device, dtype=x.dtype)
    y3 = y.view(copies, rows_per_copy, -1)
    torch.baddbmm(y3, u.view(copies, rows_per_copy, -1), stack.transpose(1, 2), beta=0.0, alpha=SCALING, out=y3)
    return y.addmm_(x, w.t())


def aten_swiglu(gate_up):
    f = gate_up.shape[1] // 2
    g = gate_up[:, :f].float()
    return (torch.nn.functional.silu(g) * gate_up[:, f:].float()).to(gate_up.dtype)


def check(device, dtype, cases) -> float:
    worst = 0.0
    for rows, hidden, f, copies in cases:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(rows, hidden, generator=g).to(device=device, dtype=dtype)
        w = (torch.randn(2 * f, hidden, generator=g) * hidden ** -0.5).to(device=device, dtype=dtype)
        u = torch.randn(rows, 2 * RANK, generator=g).to(device=device, dtype=dtype)
        stack = block_diagonal_stack(copies, f, RANK, device, dtype, g)
        ref = aten_swiglu(present_gate_up(x, w, u, stack, rows // copies)).float()
        got = fused(torch.mm(x, w.t()), u, stack, rows // copies).float()
        plain = fused(torch.mm(x, w.t())).float()
        plain_ref = aten_swiglu(torch.mm(x, w.t())).float()
        err = ((got - ref).abs().max() / ref.abs().max()).item()
        err_plain = ((plain - plain_ref).abs().max() / plain_ref.abs().max()).item()
        print(f"check rows={rows} hidden={hidden} f={f} copies={copies}: fused {err:.2e}, plain {err_plain:.2e} "
              "(relative to the present path / ATen)")
        worst = max(worst, err, err_plain)
    return worst


def time_us(fn, iters: int, repeats: int) -> float:
    """Median microseconds a call, over a CUDA graph of `iters` calls (experiments/bench_layer_kernels.py's timer)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # experiments/
    from bench_layer_kernels import time_call

    return time_call(fn, iters, repeats)[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", action="append", choices=sorted(SHAPES), help="repeatable (default: qwen2.5-1.5b)")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--check-only", action="store_true")
    args = parser.parse_args()
    if args.check_only:  # TRITON_INTERPRET=1 on the CPU: float32, a few blocks
        worst = check("cpu", torch.float32, [(64, 32, 48, 2), (96, 48, 32, 3)])
        print(f"worst relative difference {worst:.2e}")
        return 0 if worst < 1e-5 else 1
    import prge

    if not prge.cuda_built:
        print("prge was built without CUDA: its SwiGLU kernel is the baseline here")
        return 2
    swiglu = prge._core.layer_kernels.swiglu
    dtype = torch.bfloat16
    worst = check("cuda", dtype, [(8192, 1536, 8960, 32), (1024, 2048, 8192, 8)])
    print(f"{torch.cuda.get_device_name()}, triton {triton.__version__}, torch {torch.__version__}; worst "
          f"fused-vs-present relative difference {worst:.2e} (bf16 output rounding is ~4e-3)\n")
    rows = SEQUENCES * args.seq_len
    g = torch.Generator().manual_seed(1)
    for shape in args.shape or ["qwen2.5-1.5b"]:
        dims = SHAPES[shape]
        hidden, f, layers = dims["hidden_size"], dims["intermediate_size"], dims["num_hidden_layers"]
        print(f"## {shape} MLP, {rows} rows, hidden {hidden}, f {f}, bf16, microseconds a call")
        print("| q | frozen GEMM + SwiGLU | present path | frozen GEMM + fused | prge SwiGLU | Triton plain | "
              "Triton fused | fused / present | fused - frozen | saved a step, x layers (ms) | "
              "prge's compiled kernel (session 30) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        x = torch.randn(rows, hidden, generator=g).to(device="cuda", dtype=dtype)
        w = (torch.randn(2 * f, hidden, generator=g) * hidden ** -0.5).to(device="cuda", dtype=dtype)
        u = torch.randn(rows, 2 * RANK, generator=g).to(device="cuda", dtype=dtype)
        out = torch.empty(rows, 2 * f, device="cuda", dtype=dtype)
        frozen = torch.mm(x, w.t())
        for q in (1, 4, 16):
            copies = 2 * q
            stack = block_diagonal_stack(copies, f, RANK, "cuda", dtype, g)
            per_copy = rows // copies

            def present():
                return swiglu(present_gate_up(x, w, u, stack, per_copy))

            times = [time_us(lambda: swiglu(torch.mm(x, w.t(), out=out)), args.iters, args.repeats),
                     time_us(present, args.iters, args.repeats),
                     time_us(lambda: fused(torch.mm(x, w.t(), out=out), u, stack, per_copy), args.iters, args.repeats),
                     time_us(lambda: swiglu(frozen), args.iters, args.repeats),
                     time_us(lambda: fused(frozen), args.iters, args.repeats),
                     time_us(lambda: fused(frozen, u, stack, per_copy), args.iters, args.repeats)]
            aot = "-"
            if hasattr(prge._core.layer_kernels, "triton_kernels") and prge._core.layer_kernels.triton_kernels():
                # the same fusion as prge now builds it (one fixed tile, compiled ahead of time), alone
                compiled = prge._core.layer_kernels.gated_low_rank
                aot = f"{time_us(lambda: compiled(frozen, u, stack, SCALING), args.iters, args.repeats):.1f}"
            print(f"| {q} | " + " | ".join(f"{t:.1f}" for t in times) + f" | {times[2] / times[1]:.3f} | "
                  f"{times[2] - times[0]:+.1f} | {(times[1] - times[2]) * layers / 1e3:.2f} | {aot} |")
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

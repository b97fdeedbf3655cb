"""Probe for issue 22 item 6: can one GEMM carry each perturbation copy's LoRA-FA term in its
epilogue at the frozen GEMM's own speed? (Triton; a probe, not part of prge.)

P-RGE's dual step evaluates C = 2q copies of the batch; copy c's rows (R = rows / C of them) see
B_c = B + s_c eps z_i. A projection's output is
    Y[rows of c] = X[rows of c] Wᵀ + U[rows of c] B_cᵀ,   U = scaling * X Aᵀ   ([rows, r])
prge today writes the term with one batched GEMM (U_c B_cᵀ, [C, R, N]) and lets the frozen GEMM add
into it (cuBLAS, beta = 1): the term is written once and read once, ~2.6 ms of a 46.7 ms q = 16
step at Qwen2.5-1.5B (experiments/results/NOTES.md, session 14). Here one Triton kernel tiles Y so
that no tile crosses copies (BLOCK_M divides R) and adds U_tile B_c,tileᵀ (K = r) to the tile's
accumulator before it is stored: the term never reaches memory.

Timed per projection at a model shape's sizes (32 sequences of --seq-len tokens, q = 1, 4, 16 as
the step benchmark's rows), all in one process with CUDA events over a CUDA graph of --iters calls:
  cuBLAS frozen            X Wᵀ alone (what a forward without adapters pays: the goal's baseline)
  cuBLAS term + beta = 1   the present path: bmm(U_c, B_cᵀ) then addmm_ into it
  Triton frozen            this kernel without the term (Triton's own GEMM speed)
  Triton fused             this kernel with the term
  TMA frozen / TMA fused   the same through TMA descriptors, persistent (low_rank_gemm_tma, added in session 29),
                           the fastest of TMA_CONFIGS for each projection
and the layer's sum times the layer count: what the fused kernel would save in a step. Before the
timings, three cases at Qwen2.5-1.5B's qkv, gate/up and down sizes check the fused output against the
present path computed in float32 (max abs difference over max abs value). Qwen2's q/k/v bias is left out
(prge adds it in the frozen GEMM's epilogue; the kernel has no bias yet): qkv's rows time the GEMM
and the term alone.

    python experiments/attempts/fused_low_rank_gemm/bench_fused_low_rank_gemm.py [--shape qwen2.5-1.5b]
    TRITON_INTERPRET=1 python ... --check-only   # the kernel's arithmetic on the CPU, tiny sizes
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
RANK = 16  # LoRA-FA r of the paper's recipe


def projections(shape: dict) -> list[tuple[str, int, int, int, tuple[int, ...]]]:
    """(name, N out, K in, summed rank, each adapter's rows of N) of one layer's fused projections:
    qkv carries three adapters, gate/up two (each on its own rows of N: a block-diagonal B)."""
    hidden, f = shape["hidden_size"], shape["intermediate_size"]
    q, kv = shape["num_attention_heads"] * shape["head_dim"], shape["num_key_value_heads"] * shape["head_dim"]
    return [("qkv", q + 2 * kv, hidden, 3 * RANK, (q, kv, kv)), ("o", hidden, q, RANK, (hidden,)),
            ("gate_up", 2 * f, hidden, 2 * RANK, (f, f)), ("down", hidden, f, RANK, (hidden,))]


def configs():
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_stages=s, num_warps=w)
            for bm, bn, bk, s, w in [(128, 256, 64, 3, 8), (128, 128, 64, 4, 4), (128, 128, 64, 3, 8),
                                     (128, 256, 64, 4, 8), (64, 256, 64, 4, 4), (128, 128, 128, 3, 8),
                                     (64, 128, 64, 4, 4)]]


@triton.autotune(configs=configs() if not os.environ.get("TRITON_INTERPRET") else
                 [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 2})],
                 key=["M", "N", "K", "rows_per_copy", "HAS_TERM"])
@triton.jit
def low_rank_gemm(x_ptr, w_ptr, u_ptr, b_ptr, y_ptr, M, N, K, rows_per_copy, rank,
                  stride_xm, stride_wn, stride_um, stride_bc, stride_bn, stride_ym,
                  R: tl.constexpr, HAS_TERM: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    """Y = X Wᵀ (+ U[rows] B_cᵀ for the copy c the tile's rows belong to). M, N, K multiples of the
    blocks and rows_per_copy of BLOCK_M (the wrapper checks); row-major, unit inner strides; R the
    power of 2 >= rank (tl.arange's), the columns past rank masked to zero."""
    pid = tl.program_id(0)
    grid_m = M // BLOCK_M
    grid_n = N // BLOCK_N
    width = GROUP_M * grid_n  # tiles of GROUP_M row blocks are visited together (W stays in L2)
    group = pid // width
    first_m = group * GROUP_M
    size_m = min(grid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % width) % size_m
    pid_n = (pid % width) // size_m
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    x_ptrs = x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :]
    w_ptrs = w_ptr + offs_n[None, :] * stride_wn + offs_k[:, None]  # Wᵀ's [BLOCK_K, BLOCK_N] block
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for _ in range(0, tl.cdiv(K, BLOCK_K)):
        acc = tl.dot(tl.load(x_ptrs), tl.load(w_ptrs), acc)
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    if HAS_TERM:
        copy = (pid_m * BLOCK_M) // rows_per_copy
        offs_r = tl.arange(0, R)
        u = tl.load(u_ptr + offs_m[:, None] * stride_um + offs_r[None, :], mask=offs_r[None, :] < rank, other=0.0)
        bt = tl.load(b_ptr + copy * stride_bc + offs_n[None, :] * stride_bn + offs_r[:, None],
                     mask=offs_r[:, None] < rank, other=0.0)
        acc = tl.dot(u, bt, acc)
    tl.store(y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :], acc.to(y_ptr.dtype.element_ty))


def fused(x, w, u=None, b=None, rows_per_copy=None):
    """x [M, K], w [N, K], u [M, r], b [C, N, r] (C = M / rows_per_copy) -> [M, N] in x's dtype."""
    M, K = x.shape
    N = w.shape[0]
    y = torch.empty(M, N, device=x.device, dtype=x.dtype)
    has_term = u is not None
    if not has_term:
        u, b, rows_per_copy = x, w.unsqueeze(0), M  # unused
    r = u.shape[1] if has_term else 16
    assert u.stride(1) == 1 and b.stride(2) == 1 and x.stride(1) == 1 and w.stride(1) == 1

    def grid(meta):
        for dim, block in ((M, meta["BLOCK_M"]), (N, meta["BLOCK_N"]), (K, meta["BLOCK_K"]),
                           (rows_per_copy, meta["BLOCK_M"])):
            assert dim % block == 0, (dim, block)
        return (M // meta["BLOCK_M"] * (N // meta["BLOCK_N"]),)

    low_rank_gemm[grid](x, w, u, b, y, M, N, K, rows_per_copy, r, x.stride(0), w.stride(0), u.stride(0),
                        b.stride(0), b.stride(1), y.stride(0), R=max(16, triton.next_power_of_2(r)),
                        HAS_TERM=has_term)
    return y


# Session 29's run: the kernel above is 1.2-1.5 x cuBLAS without the term (results_h200.md). The
# same epilogue on a Hopper-style main loop: TMA tensor descriptors for every operand, persistent
# (one program per SM walking the tiles), the K loop and the tile loop pipelined together
# (flatten). No warp specialisation: Triton does it on Blackwell only.
TMA_CONFIGS = [(128, 128, 64, 3, 8), (128, 128, 64, 4, 8), (128, 256, 64, 3, 8), (128, 128, 128, 3, 8),
               (128, 64, 64, 4, 4), (64, 128, 64, 4, 4)]  # BLOCK_M, BLOCK_N, BLOCK_K, stages, warps


@triton.jit
def low_rank_gemm_tma(x_desc, w_desc, u_desc, b_desc, y_desc, M, N, K, rows_per_copy, NUM_SMS: tl.constexpr,
                      HAS_TERM: tl.constexpr, FLATTEN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      BLOCK_K: tl.constexpr, R: tl.constexpr, GROUP_M: tl.constexpr):
    """As low_rank_gemm, through descriptors: x [M, K], w [N, K], u [M, R] and b [C * N, R] (each
    copy's B stacked, columns past the rank zero), y [M, N]."""
    grid_m = M // BLOCK_M
    grid_n = N // BLOCK_N
    width = GROUP_M * grid_n
    k_tiles = K // BLOCK_K
    for tile in tl.range(tl.program_id(0), grid_m * grid_n, NUM_SMS, flatten=FLATTEN):
        group = tile // width
        first_m = group * GROUP_M
        size_m = min(grid_m - first_m, GROUP_M)
        off_m = (first_m + (tile % width) % size_m) * BLOCK_M
        off_n = ((tile % width) // size_m) * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for kk in range(k_tiles):
            acc = tl.dot(x_desc.load([off_m, kk * BLOCK_K]), w_desc.load([off_n, kk * BLOCK_K]).T, acc)
        if HAS_TERM:
            copy = off_m // rows_per_copy
            acc = tl.dot(u_desc.load([off_m, 0]), b_desc.load([copy * N + off_n, 0]).T, acc)
        y_desc.store([off_m, off_n], acc.to(y_desc.dtype))


def padded_rank(r: int) -> int:
    return max(16, triton.next_power_of_2(r))


def tma_launcher(x, w, u=None, b=None, rows_per_copy=None, config=TMA_CONFIGS[0], flatten=True):
    """(launch, y): launch() runs low_rank_gemm_tma once into y [M, N] (fused() through descriptors)
    with one block configuration (BLOCK_M, BLOCK_N, BLOCK_K, stages, warps). u [M, r] and b [C, N, r]
    are zero-padded to a power-of-2 rank here, once (prge would keep them so). Raises AssertionError
    when the sizes do not divide the blocks."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    bm, bn, bk, stages, warps = config
    M, K = x.shape
    N = w.shape[0]
    has_term = u is not None
    rows_per_copy = rows_per_copy if has_term else M
    for dim, block in ((M, bm), (N, bn), (K, bk), (rows_per_copy, bm)):
        assert dim % block == 0, (dim, block)
    R = padded_rank(u.shape[1] if has_term else 16)
    if has_term:
        u = torch.nn.functional.pad(u, (0, R - u.shape[1])).contiguous()
        b = torch.nn.functional.pad(b, (0, R - b.shape[2])).reshape(-1, R).contiguous()
    else:
        u = torch.zeros(bm, R, device=x.device, dtype=x.dtype)
        b = torch.zeros(bn, R, device=x.device, dtype=x.dtype)
    y = torch.empty(M, N, device=x.device, dtype=x.dtype)
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 4
    descriptors = [TensorDescriptor.from_tensor(t, block) for t, block in
                   ((x, [bm, bk]), (w, [bn, bk]), (u, [bm, R]), (b, [bn, R]), (y, [bm, bn]))]
    grid = (min(sms, (M // bm) * (N // bn)),)

    def launch():
        low_rank_gemm_tma[grid](*descriptors, M, N, K, rows_per_copy, NUM_SMS=sms, HAS_TERM=has_term,
                                FLATTEN=flatten, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, R=R, GROUP_M=8,
                                num_stages=stages, num_warps=warps)
    return launch, y


def fused_tma(x, w, u=None, b=None, rows_per_copy=None, config=TMA_CONFIGS[0], flatten=True):
    launch, y = tma_launcher(x, w, u, b, rows_per_copy, config, flatten)
    launch()
    return y


def tuned_tma(x, w, u, b, rows_per_copy, iters, repeats):
    """(microseconds, config, flatten) of the fastest of TMA_CONFIGS (each with flattened loops,
    else without where that does not compile), or (nan, None, None) when none runs."""
    best = (float("nan"), None, None)
    for config in TMA_CONFIGS:
        for flatten in (True, False):
            try:
                launch, _ = tma_launcher(x, w, u, b, rows_per_copy, config, flatten)
                t = time_us(launch, iters, repeats)
            except Exception as e:  # a configuration that does not divide, compile or fit in shared memory
                print(f"<!-- TMA {config} flatten={flatten}: {type(e).__name__}: {str(e)[:160]!r} -->")
                continue
            if not best[0] <= t:
                best = (t, config, flatten)
            break  # this configuration ran: its unflattened twin is not tried
    return best


def present_path(x, w, u, b, rows_per_copy):
    """prge's path in ATen terms: the term by one batched GEMM, then the frozen GEMM adds (beta = 1)."""
    copies = x.shape[0] // rows_per_copy
    term = torch.bmm(u.view(copies, rows_per_copy, -1), b.transpose(1, 2)).view(x.shape[0], w.shape[0])
    return term.addmm_(x, w.t())


def block_diagonal(b: torch.Tensor, splits: tuple[int, ...]) -> torch.Tensor:
    """[C, N, len(splits) * r]: projection p's adapter (its r columns) on its own `splits[p]` rows of
    N (q/k/v, gate/up), zeros elsewhere, as the fused projection's summed-rank term is."""
    out = torch.zeros_like(b)
    r, start = b.shape[2] // len(splits), 0
    for p, n in enumerate(splits):
        out[:, start:start + n, p * r:(p + 1) * r] = b[:, start:start + n, p * r:(p + 1) * r]
        start += n
    assert start == b.shape[1], (splits, b.shape)
    return out


def inputs(M, N, K, r, copies, device, dtype, splits=None, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dtype)

    x, w = randn(M, K), randn(N, K, scale=K ** -0.5)
    u, b = randn(M, r), block_diagonal(randn(copies, N, r, scale=0.05), splits or (N,))
    return x, w, u, b


def check(device, dtype, cases, tma_config=None) -> float:
    worst = 0.0
    for M, N, K, r, copies, splits in cases:
        x, w, u, b = inputs(M, N, K, r, copies, device, dtype, splits)
        ref = present_path(x.float(), w.float(), u.float(), b.float(), M // copies)
        got = fused(x, w, u, b, M // copies).float()
        err = ((got - ref).abs().max() / ref.abs().max()).item()
        plain = (fused(x, w).float() - x.float() @ w.float().t()).abs().max().item() / ref.abs().max().item()
        config = tma_config or (16, 16, 16, 1, 1)
        tma = (fused_tma(x, w, u, b, M // copies, config).float() - ref).abs().max().item() / ref.abs().max().item()
        tma_plain = ((fused_tma(x, w, config=config).float() - x.float() @ w.float().t()).abs().max().item()
                     / ref.abs().max().item())
        print(f"check M={M} N={N} K={K} r={r} copies={copies}: fused {err:.2e}, frozen {plain:.2e}, "
              f"TMA fused {tma:.2e}, TMA frozen {tma_plain:.2e} (relative)")
        worst = max(worst, err, plain, tma, tma_plain)
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
    if args.check_only:  # TRITON_INTERPRET=1 on the CPU: float32, sizes of a few blocks
        worst = check("cpu", torch.float32, [(64, 48, 32, 16, 2, (48,)), (64, 32, 48, 32, 4, (16, 16)),
                                             (96, 64, 32, 48, 3, (32, 16, 16))])
        print(f"worst relative difference {worst:.2e}")
        return 0 if worst < 1e-5 else 1
    dtype = torch.bfloat16
    worst = check("cuda", dtype, [(8192, 2048, 1536, 48, 32, (1536, 256, 256)),
                                  (1024, 17920, 1536, 32, 8, (8960, 8960)), (8192, 1536, 8960, 16, 2, (1536,))],
                  tma_config=TMA_CONFIGS[0])
    print(f"{torch.cuda.get_device_name()}, triton {triton.__version__}, torch {torch.__version__}; "
          f"worst fused-vs-present relative difference {worst:.2e} (bf16 output rounding is ~4e-3)\n")
    rows = SEQUENCES * args.seq_len
    for shape in args.shape or ["qwen2.5-1.5b"]:
        dims = SHAPES[shape]
        print(f"## {shape}, {SEQUENCES} sequences x {args.seq_len} tokens ({rows} rows), bf16, microseconds a call")
        print("| q | projection | N | K | cuBLAS frozen | cuBLAS term + beta=1 | Triton frozen | Triton fused | "
              "TMA frozen | TMA fused | TMA fused / present | TMA fused / cuBLAS frozen | TMA fused's block, flatten |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for q in (1, 4, 16):
            copies = 2 * q
            sums = [0.0] * 6
            for name, N, K, r, splits in projections(dims):
                x, w, u, b = inputs(rows, N, K, r, copies, "cuda", dtype, splits)
                out = torch.empty(rows, N, device="cuda", dtype=dtype)
                tma_frozen = tuned_tma(x, w, None, None, None, args.iters, args.repeats)
                tma_fused = tuned_tma(x, w, u, b, rows // copies, args.iters, args.repeats)
                times = [time_us(lambda: torch.mm(x, w.t(), out=out), args.iters, args.repeats),
                         time_us(lambda: present_path(x, w, u, b, rows // copies), args.iters, args.repeats),
                         time_us(lambda: fused(x, w), args.iters, args.repeats),
                         time_us(lambda: fused(x, w, u, b, rows // copies), args.iters, args.repeats),
                         tma_frozen[0], tma_fused[0]]
                sums = [s + t for s, t in zip(sums, times)]
                print(f"| {q} | {name} | {N} | {K} | " + " | ".join(f"{t:.1f}" for t in times)
                      + f" | {times[5] / times[1]:.3f} | {times[5] / times[0]:.3f} | {tma_fused[1]}, {tma_fused[2]} |")
            layers = dims["num_hidden_layers"]
            print(f"| {q} | all, x {layers} layers (ms) | | | " + " | ".join(f"{s * layers / 1e3:.2f}" for s in sums)
                  + f" | {sums[5] / sums[1]:.3f} | {sums[5] / sums[0]:.3f} | |")
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

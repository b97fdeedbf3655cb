"""Triton source of prge's gated activation with the gate/up LoRA-FA term (CUDA builds only).

Compiled ahead of time into cubins by compile_kernels.py during a CUDA build and launched from
C++ (csrc/prge/cuda/gated_low_rank.cpp); nothing imports it at run time.

P-RGE's dual step (Gao et al., arXiv 2409.15520, Sec. 3) runs C = 2q perturbed copies of the
batch in one forward: copy c's rows see gate_up = x W^T + scaling (A x) B_c^T. prge's plain path
writes that term with a batched GEMM into the frozen GEMM's output and then applies the gated
activation; this kernel reads the frozen output and A x and adds each copy's term inside the
activation, so the [rows, 2f] term is never written and read back.
"""
import triton
import triton.language as tl

SQRT_2_OVER_PI = tl.constexpr(0.7978845608028654)  # ATen's kBeta for GELU's tanh approximation
GELU_KAPPA = tl.constexpr(0.044715)


@triton.jit
def _copy_term(u_part, b_part, block_first_row, rows, rows_per_copy, stride_b_copy, col_ok, BLOCK_M: tl.constexpr):
    """U_part B_c,part^T for one tile ([BLOCK_M, R] x [R, BLOCK_N] -> float32): row m of the tile
    uses the B of its copy m // rows_per_copy. With rows_per_copy >= BLOCK_M a tile spans at most
    two copies; a tile that does multiplies each copy's rows of U (the others zeroed) by its B."""
    first_copy = block_first_row // rows_per_copy
    last_copy = (tl.minimum(block_first_row + BLOCK_M, rows) - 1) // rows_per_copy
    b_first = b_part + first_copy.to(tl.int64) * stride_b_copy
    if last_copy == first_copy:
        term = tl.dot(u_part, tl.load(b_first, mask=col_ok[None, :], other=0.0))
    else:
        in_next = ((block_first_row + tl.arange(0, BLOCK_M)) // rows_per_copy) != first_copy
        zero = tl.zeros_like(u_part)
        term = tl.dot(tl.where(in_next[:, None], zero, u_part), tl.load(b_first, mask=col_ok[None, :], other=0.0))
        term += tl.dot(tl.where(in_next[:, None], u_part, zero),
                       tl.load(b_first + stride_b_copy, mask=col_ok[None, :], other=0.0))
    return term


@triton.jit
def gated_low_rank(gate_up_ptr, u_ptr, b_ptr, out_ptr, rows, f, rows_per_copy, scaling,
                   stride_gate_up, stride_u, stride_b_copy, stride_b_row, stride_out,
                   R: tl.constexpr, GELU: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """out[m, n] = act(g) * u, rounded as ATen rounds act(g) * up, with
        g = gate_up[m, n]     + scaling * U[m, :R] . B_c[n, :R]        (rounded to out's dtype)
        u = gate_up[m, f + n] + scaling * U[m, R:] . B_c[f + n, R:]    (rounded to out's dtype)
    for row m of copy c = m // rows_per_copy; act is SiLU (GELU == 0) or GELU's tanh form.

    gate_up [rows, 2f] (gate then up; rows stride_gate_up apart), U = A x [rows, 2R] (gate's R
    columns, then up's), B [copies, 2f, 2R] block-diagonal (rows stride_b_row apart, copies
    stride_b_copy), out [rows, f]; last dims contiguous; rows_per_copy >= BLOCK_M when copies > 1.
    The term's dot products accumulate in float32; each sum is rounded to the dtype once before the
    activation, as the plain path's beta = 1 GEMM rounds it with a bias or A folded under W (without
    either it rounds scaling * term first: within one ulp of this). The activation uses Triton's exp and division
    (a few float32 ulp from ATen's expf and IEEE division), so a rounded act(g) may differ from
    the plain path's by one ulp of the dtype where it lies next to a rounding tie."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    block_first_row = pid_m * BLOCK_M
    offs_m = block_first_row + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_r = tl.arange(0, R)
    row_ok = offs_m < rows
    col_ok = offs_n < f
    tile_ok = row_ok[:, None] & col_ok[None, :]
    rows64 = offs_m.to(tl.int64)
    gate_ptrs = gate_up_ptr + rows64[:, None] * stride_gate_up + offs_n[None, :]
    gate = tl.load(gate_ptrs, mask=tile_ok, other=0.0)
    up = tl.load(gate_ptrs + f, mask=tile_ok, other=0.0)
    u_ptrs = u_ptr + rows64[:, None] * stride_u + offs_r[None, :]
    u_gate = tl.load(u_ptrs, mask=row_ok[:, None], other=0.0)
    u_up = tl.load(u_ptrs + R, mask=row_ok[:, None], other=0.0)
    b_gate = b_ptr + offs_n[None, :] * stride_b_row + offs_r[:, None]  # [R, BLOCK_N] of copy 0
    b_up = b_gate + f * stride_b_row + R  # up's rows of the block-diagonal stack, its R columns
    term_gate = _copy_term(u_gate, b_gate, block_first_row, rows, rows_per_copy, stride_b_copy, col_ok, BLOCK_M)
    term_up = _copy_term(u_up, b_up, block_first_row, rows, rows_per_copy, stride_b_copy, col_ok, BLOCK_M)
    dtype = out_ptr.dtype.element_ty
    g = (gate.to(tl.float32) + scaling * term_gate).to(dtype).to(tl.float32)
    u = (up.to(tl.float32) + scaling * term_up).to(dtype).to(tl.float32)
    if GELU:
        inner = SQRT_2_OVER_PI * (g + GELU_KAPPA * (g * g * g))
        act = 0.5 * g * (2.0 - 2.0 / (tl.exp(2.0 * inner) + 1.0))  # 1 + tanh(inner)
    else:
        act = g / (1.0 + tl.exp(-g))
    h = act.to(dtype).to(tl.float32) * u
    tl.store(out_ptr + rows64[:, None] * stride_out + offs_n[None, :], h.to(dtype), mask=tile_ok)

#pragma once
// The gated activation with gate/up's LoRA-FA term added inside it: one pass instead of the term's
// batched GEMM into the frozen output and the activation after it (P-RGE's copies, Gao et al.,
// arXiv 2409.15520, Sec. 3). A Triton kernel compiled ahead of time (triton/gated_low_rank.py);
// checked against the plain path in experiments/gpu_checks.py. Built only in a CUDA build.
#include "prge/models/arch.h"

#include <torch/torch.h>

namespace prge::cuda {

// Whether gated_low_rank runs here: a compiled variant for the current device's architecture,
// `dtype` (bfloat16, float16), per-part rank `rank` (16, 32, 64) and `activation`; f a multiple
// of 16; one copy, or at least one tile of rows (64) per copy; fewer than 2^31 rows.
bool gated_low_rank_supported(torch::ScalarType dtype, int64_t rows, int64_t f, int64_t rank, int64_t copies,
                              Activation activation);

// act(gate + scaling U_g B_c,gate^T) * (up + scaling U_u B_c,up^T) for the rows of each copy c,
// each sum rounded to the dtype first: round(round(x W^T) + scaling * term), as the plain path
// computes it with a bias or A folded under W; without either the plain path rounds the term first
// (round(x W^T + round(scaling * term))), within one ulp of this.
//   gate_up  [..., 2f]  the frozen projection's output x W^T (+ bias), gate columns first
//   ax       [..., 2r]  A x of gate's adapter (first r columns), then up's
//   b_stack  [copies, 2f, 2r]  block-diagonal: gate's rows use columns [0, r), up's [r, 2r)
// The rows of gate_up / ax (all dimensions but the last) are split evenly into copies, in order.
// Returns [..., f] contiguous in gate_up's dtype. Throws std::invalid_argument when the operands'
// shapes, dtypes or devices disagree or gated_low_rank_supported is false for them.
torch::Tensor gated_low_rank(const torch::Tensor& gate_up, const torch::Tensor& ax, const torch::Tensor& b_stack,
                             double scaling, Activation activation);

}  // namespace prge::cuda

#pragma once
// The gated MLP activation with gate/up's LoRA term added in the same pass. The frozen GEMM
// writes gate_up = x Wᵀ (+ bias) alone; this kernel reads it once and adds
// scaling * (A x) B_cᵀ on the tensor cores, with B_c the B of the row's perturbation copy (Gao
// et al. 2024, P-RGE: each copy of the batch uses its own B ± eps z). It replaces the low-rank
// term's own [rows, 2f] output and the frozen GEMM's read of it (beta = 1). Built only in a CUDA
// build; checked against the ATen ops in experiments/gpu_checks.py.
#include "prge/models/arch.h"

#include <torch/torch.h>

namespace prge::cuda {

// Whether the kernel takes this shape: bfloat16 or float16, f a multiple of 32, the adapters'
// summed rank a multiple of 16 up to 64. Otherwise the caller keeps the low-rank GEMM.
bool gated_low_rank_supported(torch::ScalarType dtype, int64_t f, int64_t rank);

// gate_up: [..., 2f], contiguous (gate first), the frozen GEMM's output. ax: [..., R], x Aᵀ of
// the adapted parts side by side, rows as gate_up's. b_stack: [copies, 2f, R], copy c's B of
// every part in its block (zeros elsewhere); the rows are `copies` equal runs, run c using copy
// c. Returns act(gate + d_gate) * (up + d_up), [..., f], with d = scaling * ax B_cᵀ rounded to
// the dtype, each sum rounded to the dtype, then rounded where ATen rounds act and the product.
// Throws std::invalid_argument on other dtypes, shapes or layouts.
torch::Tensor gated_low_rank(const torch::Tensor& gate_up, const torch::Tensor& ax, const torch::Tensor& b_stack,
                             double scaling, Activation activation);

}  // namespace prge::cuda

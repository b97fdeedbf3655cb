#pragma once
// Fused CUDA kernels for the memory-bound passes of a Llama layer that ATen runs as separate
// kernels. Each is checked against the ATen path on the GPU (experiments/gpu_checks.py).
// Built only in a CUDA build (PRGE_WITH_CUDA).
#include <torch/torch.h>

namespace prge::cuda {

// RoPE, HF layout, one pass: out = x * cos + rotate_half(x) * sin with rotate_half(x) =
// [-x2, x1]. x: [n, h, t, hd] (any strides, last dim contiguous), cos / signed_sin: [t, hd]
// contiguous ([-sin, sin], see apply_rope). Returns [n, h, t, hd] as the transposed view of a
// contiguous [n, t, h, hd] tensor (the layout ATen's elementwise ops give the model's view).
torch::Tensor rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& signed_sin);

// SwiGLU of the fused gate/up output in one pass: silu(gate) * up, with gate_up [..., 2f]
// contiguous (gate first). Returns [..., f].
torch::Tensor swiglu(const torch::Tensor& gate_up);

// Residual add and RMSNorm in one pass over each row: residual += delta (in place, rounded
// to the dtype as x + delta is), then returns residual * rsqrt(mean(residual^2) + eps) * weight
// (statistics in float32, one rounding). residual: contiguous [..., d]; delta: [..., d] of the
// same dtype with its rows evenly apart (contiguous, or a column slice of a wider output);
// weight [d] of that dtype.
torch::Tensor add_rms_norm_(torch::Tensor& residual, const torch::Tensor& delta, const torch::Tensor& weight,
                            double eps);

}  // namespace prge::cuda

#pragma once
// A quantized frozen weight dequantized in one pass on the GPU (codes, scale and offset read
// once, the dense weight written once), instead of ATen's unpack, cast, multiply-add and cast
// kernels and their float32 temporaries. Checked against QuantizedWeight::dequantize in
// experiments/gpu_checks.py. Built only in a CUDA build (PRGE_WITH_CUDA).
#include "prge/quantized_weight.h"

#include <torch/torch.h>

namespace prge::cuda {

// Whether dequantize_into takes w and out: both on the GPU, out [w.rows, w.cols] with
// contiguous 16-byte aligned rows in float32 / bfloat16 / float16, cols and group_size
// multiples of 8, codes 4-byte (int4) or 8-byte (int8) aligned.
bool can_dequantize_into(const QuantizedWeight& w, const torch::Tensor& out);

// out = q * scale + offset (float32 fused multiply-add, rounded once to out's dtype), where
// can_dequantize_into(w, out); std::invalid_argument otherwise.
void dequantize_into(const QuantizedWeight& w, torch::Tensor& out);

}  // namespace prge::cuda

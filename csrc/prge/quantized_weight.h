#pragma once
// Frozen weights kept quantized: w[o, i] = q[o, i] * scale[o, g] + offset[o, g] with g = i /
// group_size, q an int8 (8 bits) or a 4-bit unsigned code (two per byte, the low nibble first).
// With LoRA-FA only B is trained, so the frozen W never has to be dense in memory: a layer's
// weight is dequantized into a temporary right before its GEMM (as QLoRA does), which keeps the
// GEMM, its LoRA-FA epilogue, the copy stacks and CUDA graphs unchanged above it.
//
// The formats hold GGUF's blocks exactly (Q8_0, Q4_0, Q4_1, Q5_0 as 8-bit group 32, Q4_K as
// 4-bit group 32 with its 6-bit sub-block scales multiplied out in float32, Q6_K as 8-bit group
// 16) and round-to-nearest quantization of dense checkpoints (int8 per output channel, int4
// asymmetric per group of 32 / 64 / 128).
#include <torch/torch.h>

#include <string>
#include <vector>

namespace prge {

struct QuantizedWeight {
  int64_t bits = 0;        // 0: not quantized; 4 or 8
  int64_t rows = 0, cols = 0;
  int64_t group_size = 0;  // columns per scale; cols for one scale per output channel
  torch::Tensor qweight;   // bits 8: int8 [rows, cols]; bits 4: uint8 [rows, cols / 2]
  torch::Tensor scales;    // float32 [rows, cols / group_size]
  torch::Tensor offsets;   // float32 [rows, cols / group_size], or undefined (symmetric)

  bool defined() const { return bits != 0; }
  // The dense weight [rows, cols] in `dtype`, each element q * scale + offset computed in
  // float32 and rounded once (equal to dequantizing in float32, then casting).
  torch::Tensor dequantize(torch::ScalarType dtype) const;
  // Bytes the quantized storage takes (codes, scales, offsets).
  int64_t bytes() const;
  QuantizedWeight to(const torch::Device& device) const;
  // From the tensors a checkpoint stores under quantized_tensor_names(name) (offsets optional).
  static QuantizedWeight from_tensors(const std::string& name, const torch::Tensor& qweight, const torch::Tensor& scales,
                                      const torch::Tensor& offsets, const torch::Tensor& format, int64_t rows,
                                      int64_t cols);
  void validate(const std::string& name) const;
};

// Round-to-nearest quantization of a dense weight [rows, cols]: bits 8, symmetric, one scale per
// group (group_size = cols: per output channel); bits 4, asymmetric (min and scale per group).
// Throws std::invalid_argument when cols is not a multiple of group_size.
QuantizedWeight quantize(const torch::Tensor& weight, int64_t bits, int64_t group_size);

// The safetensors names of a quantized weight stored as `name` (e.g. ...q_proj.weight):
// name.qweight, name.scales, name.offsets and name.format ([bits, group_size] int64).
std::vector<std::string> quantized_tensor_names(const std::string& name);

}  // namespace prge

#pragma once
// CUDA kernels for the LoRA-FA parameter side of a ZO step, on the counter RNG of
// counter_rng.h (the same integers; float32 Box-Muller with the CUDA math library, as
// ATen's CUDA kernels compute it). Built only in a CUDA build (PRGE_WITH_CUDA). Every
// argument that changes between steps (step key, g, plan) is read from device memory, so
// the kernels can be captured in a CUDA graph once and replayed for every step.
#include <torch/torch.h>

#include <cstdint>

namespace prge::cuda {

// One part of a projection group: its B (contiguous [rows, rank] float32 view) and where its
// block sits in the group's block-diagonal copy stack.
struct GroupPart {
  const float* lora_b = nullptr;
  int64_t rows = 0;
  int64_t rank = 0;
  int64_t row_offset = 0;
  int64_t col_offset = 0;
  int64_t param_index = 0;
};
constexpr int kMaxGroupParts = 4;

// out [copies, rows, cols] (model dtype): B_p + scale[c] * z_{query[c]}(p) written into part
// p's block; the rest of `out` is not touched (the caller keeps it zero). query: [copies]
// int64, scale: [copies] float32, step_key: [1] int64.
void fill_group_blocks(const GroupPart* parts, int num_parts, const torch::Tensor& query,
                       const torch::Tensor& scale, const torch::Tensor& step_key, bool gaussian,
                       torch::Tensor& out);

// out [total] float32: (1/q) sum_i g_i z_i(j) for every element of the flat adapter buffer.
// segments: [P, 3] int64 (offset, numel, param_index), sorted by offset; g: [q] float32.
void rge_direction(const torch::Tensor& segments, const torch::Tensor& g,
                   const torch::Tensor& step_key, bool gaussian, torch::Tensor& out);

// [rows, n] float32 noise of the given stream keys (the kernel twin of counter_rng::noise_rows).
torch::Tensor counter_noise_rows(const torch::Tensor& stream_keys, int64_t n, bool gaussian);

}  // namespace prge::cuda

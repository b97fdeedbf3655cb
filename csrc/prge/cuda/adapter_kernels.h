#pragma once
// CUDA kernels for the LoRA-FA parameter side of a ZO step, on the counter RNG of
// counter_rng.h (the same integers; float32 Box-Muller with the CUDA math library, as
// ATen's CUDA kernels compute it). Built only in a CUDA build (PRGE_WITH_CUDA). Every
// argument that changes between steps (step key, g, plan) is read from device memory, so
// the kernels can be captured in a CUDA graph once and replayed for every step.
#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace prge::cuda {

// One B (contiguous [rows, rank] float32) and where its block sits in a copy stack: `out`,
// [copies, out_rows, out_cols] of the model dtype (a projection's own stack, or its group's
// block-diagonal one).
struct StackPart {
  const float* lora_b = nullptr;
  int64_t rows = 0;
  int64_t rank = 0;
  int64_t row_offset = 0;
  int64_t col_offset = 0;
  int64_t param_index = 0;
  void* out = nullptr;
  int64_t out_rows = 0;
  int64_t out_cols = 0;
};
constexpr int kMaxStackParts = 8;  // parts per launch (a Llama layer has 7)

// For every part: B + scale[c] * z_{row_query[u]}(part) written into its block of copy c of
// its stack, for every copy c listed in row_copies[u] (-1 pads a row): z is drawn once per
// noise row, however many copies use it. The rest of each stack is not touched (the caller
// keeps it zero). One launch per kMaxStackParts parts. row_query: [U] int64, row_copies:
// [U, S] int64, scale: [copies] float32, step_key: [1] int64; every stack has `dtype`.
void fill_copy_stacks(const std::vector<StackPart>& parts, const torch::Tensor& row_query,
                      const torch::Tensor& row_copies, const torch::Tensor& scale,
                      const torch::Tensor& step_key, bool gaussian, torch::ScalarType dtype);

// out [total] float32: (1/q) sum_i g_i z_i(j) for every element of the flat adapter buffer.
// segments: [P, 3] int64 (offset, numel, param_index), sorted by offset; g: [q] float32.
void rge_direction(const torch::Tensor& segments, const torch::Tensor& g,
                   const torch::Tensor& step_key, bool gaussian, torch::Tensor& out);

// [rows, n] float32 noise of the given stream keys (the kernel twin of counter_rng::noise_rows).
torch::Tensor counter_noise_rows(const torch::Tensor& stream_keys, int64_t n, bool gaussian);

}  // namespace prge::cuda

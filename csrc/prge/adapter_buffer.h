#pragma once
// Every LoRA-FA B of the model in one contiguous float32 buffer; each layer's lora_b is a
// view of it. The RGE direction (1/q) sum_i g_i z_i over all of them and the optimizer's
// update then run over this one tensor: on CUDA one kernel regenerates z and contracts it
// with g for every matrix at once, instead of a few kernels per matrix.
#include "prge/lora_fa_linear.h"
#include "prge/perturbation.h"

#include <torch/torch.h>

#include <vector>

namespace prge {

struct AdapterSegment {
  int64_t param_index = 0;  // the matrix's noise coordinate
  int64_t offset = 0;       // first element in the flat buffer
  int64_t numel = 0;
};

class AdapterBuffer {
 public:
  AdapterBuffer() = default;
  // Moves every adapter's current B into one buffer and points each lora_b at its view.
  explicit AdapterBuffer(const std::vector<LoraFaLinear*>& layers);

  bool empty() const { return segments_.empty(); }
  const torch::Tensor& values() const { return values_; }  // [total] float32
  const std::vector<AdapterSegment>& segments() const { return segments_; }

  // (1/q) sum_i g_i z_i over the whole buffer, [total] float32. g: [q] float32 on the buffer's
  // device; step_key: [1] int64 counter_rng::step_key(seed, step) on the device (the CUDA
  // kernel reads it there, so a captured graph serves every step).
  torch::Tensor direction(const PerturbationStream& stream, int64_t step, const torch::Tensor& g,
                          const torch::Tensor& step_key) const;
  // The same through ATen ops, one segment at a time (CPU, torch RNG, and the reference the
  // CUDA kernel is tested against).
  torch::Tensor direction_aten(const PerturbationStream& stream, int64_t step,
                               const torch::Tensor& g) const;

 private:
  torch::Tensor values_;
  std::vector<AdapterSegment> segments_;
  torch::Tensor segment_table_;  // [segments, 3] int64 (offset, numel, param_index), device
};

// True when the CUDA kernels apply: a CUDA build, a CUDA tensor and the counter RNG.
bool use_cuda_kernels(const torch::Device& device, NoiseRng rng);

}  // namespace prge

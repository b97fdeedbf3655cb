#pragma once
// CUDA kernels for full-parameter MeZO on the counter RNG (counter_rng.h): a weight's perturbed
// copy w + scale * z and one weight's RGE direction (1/q) sum_i g_i z_i, with z drawn inside the
// kernel and never stored (MeZO's seed trick, Malladi et al. 2023, Algorithm 1). The step key is
// read from device memory when one is given, so that a CUDA graph replays the kernels with each
// step's key; otherwise it is passed by value. Built only in a CUDA build (PRGE_WITH_CUDA).
#include <torch/torch.h>

#include <cstdint>

namespace prge::cuda {

// counter_rng::step_key(seed, step): `device` ([1] int64 on the GPU) when defined, else `value`.
struct StepKey {
  uint32_t value = 0;
  torch::Tensor device;
};

// out = w + scale * z, z = counter_rng::noise(stream_key(key, param_index, query), w.numel()),
// in float32 and rounded once to w's dtype (as ATen's add(w, z, alpha = scale) computes it).
// w, out: contiguous CUDA tensors of one shape and dtype (float32, bfloat16 or float16; out may
// be a contiguous view into a larger buffer). Throws std::invalid_argument otherwise.
void perturbed_weight(const torch::Tensor& w, const StepKey& key, int64_t param_index, int64_t query, double scale,
                      bool gaussian, torch::Tensor& out);

// [numel] float32 on g's device: (1/q) sum_i g[i] z_i(j), z_i the stream of (param_index, query i)
// over numel values (PerturbationStream::combine for a weight, Eq. (1) of Gao et al.).
// g: [q] float32 CUDA tensor, q <= counter_rng::kQueriesPerParam.
torch::Tensor weight_direction(int64_t numel, const StepKey& key, int64_t param_index, const torch::Tensor& g,
                               bool gaussian);

}  // namespace prge::cuda

#pragma once
// Perturbations are a function, not a tensor: z(seed, step, param, query) is
// regenerated from a derived seed whenever it is needed (MeZO's seed trick), so
// no estimator ever stores z between the forward pass and the update.
#include "prge/seeds.h"

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace prge {

enum class NoiseDistribution { Gaussian, Rademacher };
NoiseDistribution parse_noise_distribution(const std::string& name);
std::string to_string(NoiseDistribution distribution);

// Where z comes from:
//   Torch:   torch's generator of the device (CPU mt19937, CUDA Philox) seeded per draw;
//            bit-reproducible per device type.
//   Counter: counter_rng.h, integer ops only; the same integers on every device and in
//            exported graphs (ONNX Runtime, AOTInductor), so engines can reproduce it.
// Torch: the device's own generator (CPU mt19937, CUDA Philox), seeded per coordinate.
// Counter: integer-hash noise, the same numbers on every device and in exported graphs, and
// what the CUDA kernels and CUDA graphs draw. Auto (the default): Counter where it enables the
// fused, CUDA-graphed step (LoRA-FA estimators on CUDA devices; full-parameter MeZO on CUDA
// devices in a CUDA build, whose kernels draw its weight-sized z), Torch elsewhere (on the
// CPU, where the counter's ATen ops draw weight-sized z about 11x slower than mt19937).
enum class NoiseRng { Torch, Counter, Auto };
NoiseRng parse_noise_rng(const std::string& name);
std::string to_string(NoiseRng rng);
// The generator `rng` means on `device` for an estimator that perturbs LoRA-FA B (true) or
// every weight (false); Torch and Counter are returned as they are.
NoiseRng resolve_noise_rng(NoiseRng rng, const torch::Device& device, bool lora_fa = true);
// Whether this build has prge's CUDA kernels (PRGE_WITH_CUDA: a CUDA torch and nvcc at build time).
bool cuda_kernels_built();

// Marks a draw that yields all q queries of one parameter at once ([q, ...]).
constexpr int64_t kQueryBlock = -1;


// How a trainable tensor draws its q noise directions.
enum class NoiseLayout {
  Block,     // one draw of shape [q, ...] (LoRA-FA B: the q copies feed one bmm)
  PerQuery,  // one draw per query (MeZO: full-size tensors, perturbed one query at a time)
};

struct ZoParameter {
  torch::Tensor value;  // updated in place
  int64_t index = 0;    // position in the model's parameter order; part of the seed
  NoiseLayout layout = NoiseLayout::Block;
  std::string name;
};

class PerturbationStream {
 public:
  PerturbationStream(uint64_t seed, NoiseDistribution distribution, NoiseRng rng = NoiseRng::Torch);

  uint64_t seed() const { return seed_; }
  NoiseDistribution distribution() const { return distribution_; }
  NoiseRng rng() const { return rng_; }

  // z for one query of one parameter (float32, on `device`).
  torch::Tensor noise(int64_t step, int64_t param_index, int64_t query, at::IntArrayRef shape,
                      const torch::Device& device) const;
  // z for all q queries of one parameter in one draw: [q, shape...].
  torch::Tensor noise_block(int64_t step, int64_t param_index, int64_t queries,
                            at::IntArrayRef shape, const torch::Device& device) const;
  // z_i of `param` for query i, honouring its layout (a slice of the block for Block).
  torch::Tensor query_noise(const ZoParameter& param, int64_t step, int64_t query,
                            int64_t queries) const;
  // (1/q) sum_i g_i z_i  — the RGE direction of Eq. (1) for one parameter, float32.
  torch::Tensor combine(const ZoParameter& param, int64_t step,
                        const std::vector<double>& projected_grads) const;
  // The same from device tensors alone (no host sync; CUDA build, counter RNG): g [q] float32
  // and step_key [1] int64 (counter_rng::step_key(seed, step)) on the parameter's device.
  // Throws std::invalid_argument elsewhere.
  torch::Tensor combine_on_device(const ZoParameter& param, const torch::Tensor& projected_grads,
                                  const torch::Tensor& step_key) const;

 private:
  torch::Tensor draw(uint64_t derived_seed, at::IntArrayRef shape, const torch::Device& device) const;

  torch::Tensor counter_draw(int64_t step, int64_t param_index, int64_t query, at::IntArrayRef shape,
                             const torch::Device& device) const;

  uint64_t seed_;
  NoiseDistribution distribution_;
  NoiseRng rng_;
};

}  // namespace prge

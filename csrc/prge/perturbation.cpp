#include "prge/perturbation.h"

#include "prge/counter_rng.h"
#include "prge/io/shown_text.h"

#ifdef PRGE_WITH_CUDA
#include "prge/cuda/weight_noise_kernels.h"
#endif

#include <ATen/Context.h>
#include <fmt/format.h>

#include <mutex>
#include <stdexcept>

namespace prge {

NoiseDistribution parse_noise_distribution(const std::string& name) {
  if (name == "gaussian") return NoiseDistribution::Gaussian;
  if (name == "rademacher") return NoiseDistribution::Rademacher;
  throw std::invalid_argument(
      fmt::format("unknown noise distribution {} (allowed: gaussian, rademacher)", io::shown_value(name)));
}

std::string to_string(NoiseDistribution distribution) {
  return distribution == NoiseDistribution::Gaussian ? "gaussian" : "rademacher";
}

NoiseRng parse_noise_rng(const std::string& name) {
  if (name == "torch") return NoiseRng::Torch;
  if (name == "counter") return NoiseRng::Counter;
  if (name == "auto") return NoiseRng::Auto;
  throw std::invalid_argument(
      fmt::format("unknown noise rng {} (allowed: auto, torch, counter)", io::shown_value(name)));
}

std::string to_string(NoiseRng rng) {
  switch (rng) {
    case NoiseRng::Torch: return "torch";
    case NoiseRng::Counter: return "counter";
    case NoiseRng::Auto: return "auto";
  }
  return "?";
}

bool cuda_kernels_built() {
#ifdef PRGE_WITH_CUDA
  return true;
#else
  return false;
#endif
}

NoiseRng resolve_noise_rng(NoiseRng rng, const torch::Device& device, bool lora_fa) {
  if (rng != NoiseRng::Auto) return rng;
  // MeZO's weight-sized z: one kernel per weight where the build has them.
  return device.is_cuda() && (lora_fa || cuda_kernels_built()) ? NoiseRng::Counter : NoiseRng::Torch;
}

PerturbationStream::PerturbationStream(uint64_t seed, NoiseDistribution distribution, NoiseRng rng)
    : seed_(seed), distribution_(distribution), rng_(rng) {
  if (rng == NoiseRng::Auto) throw std::invalid_argument("a perturbation stream needs a resolved rng (torch or counter)");
}

torch::Tensor PerturbationStream::counter_draw(int64_t step, int64_t param_index, int64_t query,
                                               at::IntArrayRef shape,
                                               const torch::Device& device) const {
  const auto key = counter_rng::stream_key(counter_rng::step_key(seed_, step), param_index, query);
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return counter_rng::noise(key, n, distribution_ == NoiseDistribution::Gaussian, device).view(shape);
}

torch::Tensor PerturbationStream::draw(uint64_t derived_seed, at::IntArrayRef shape,
                                       const torch::Device& device) const {
  // A fresh generator of the device's own kind (CPU: mt19937, CUDA: Philox), seeded
  // like torch.Generator(device).manual_seed(derived_seed) so Python references
  // regenerate the same z.
  at::Generator generator = at::globalContext().defaultGenerator(device).clone();
  {
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_current_seed(derived_seed);
  }
  auto options = torch::TensorOptions().dtype(torch::kFloat32).device(device);
  if (distribution_ == NoiseDistribution::Gaussian) {
    return at::randn(shape, generator, options);
  }
  return at::empty(shape, options).bernoulli_(0.5, generator).mul_(2.0).sub_(1.0);
}

torch::Tensor PerturbationStream::noise(int64_t step, int64_t param_index, int64_t query,
                                        at::IntArrayRef shape, const torch::Device& device) const {
  if (rng_ == NoiseRng::Counter) return counter_draw(step, param_index, query, shape, device);
  return draw(derive_seed(seed_, step, param_index, query), shape, device);
}

torch::Tensor PerturbationStream::noise_block(int64_t step, int64_t param_index, int64_t queries,
                                              at::IntArrayRef shape,
                                              const torch::Device& device) const {
  if (rng_ == NoiseRng::Counter) {  // query i of the block is the per-query stream i
    const auto step_key = counter_rng::step_key(seed_, step);
    std::vector<uint32_t> keys;
    for (int64_t i = 0; i < queries; ++i) keys.push_back(counter_rng::stream_key(step_key, param_index, i));
    int64_t n = 1;
    for (auto d : shape) n *= d;
    std::vector<int64_t> block_shape{queries};
    block_shape.insert(block_shape.end(), shape.begin(), shape.end());
    return counter_rng::noise_rows(keys, n, distribution_ == NoiseDistribution::Gaussian, device)
        .view(block_shape);
  }
  std::vector<int64_t> block_shape{queries};
  block_shape.insert(block_shape.end(), shape.begin(), shape.end());
  return draw(derive_seed(seed_, step, param_index, kQueryBlock), block_shape, device);
}

torch::Tensor PerturbationStream::query_noise(const ZoParameter& param, int64_t step, int64_t query,
                                              int64_t queries) const {
  const auto& v = param.value;
  if (param.layout == NoiseLayout::PerQuery) {
    return noise(step, param.index, query, v.sizes(), v.device());
  }
  return noise_block(step, param.index, queries, v.sizes(), v.device()).select(0, query);
}

torch::Tensor PerturbationStream::combine(const ZoParameter& param, int64_t step,
                                          const std::vector<double>& projected_grads) const {
  const auto queries = static_cast<int64_t>(projected_grads.size());
  const auto& v = param.value;
  if (param.layout == NoiseLayout::Block) {
    auto z = noise_block(step, param.index, queries, v.sizes(), v.device());
    auto g = torch::tensor(projected_grads, torch::kFloat64).to(torch::kFloat32).to(v.device());
    // One contraction over the query axis instead of q axpys.
    return at::tensordot(g, z, {0}, {0}).div_(static_cast<double>(queries));
  }
#ifdef PRGE_WITH_CUDA
  if (rng_ == NoiseRng::Counter && v.is_cuda()) {  // one kernel draws every z_i of the weight
    auto g = torch::tensor(projected_grads, torch::kFloat64).to(torch::kFloat32).to(v.device());
    return cuda::weight_direction(v.numel(), {counter_rng::step_key(seed_, step), {}}, param.index, g,
                                  distribution_ == NoiseDistribution::Gaussian)
        .view(v.sizes());
  }
#endif
  auto direction = torch::zeros(v.sizes(), v.options().dtype(torch::kFloat32));
  for (int64_t i = 0; i < queries; ++i) {
    direction.add_(noise(step, param.index, i, v.sizes(), v.device()), projected_grads[i]);
  }
  return direction.div_(static_cast<double>(queries));
}

torch::Tensor PerturbationStream::combine_on_device(const ZoParameter& param, const torch::Tensor& projected_grads,
                                                   const torch::Tensor& step_key) const {
#ifdef PRGE_WITH_CUDA
  const auto& v = param.value;
  // Either layout: under the counter RNG row i of a Block draw is the PerQuery stream i.
  if (rng_ == NoiseRng::Counter && v.is_cuda()) {
    return cuda::weight_direction(v.numel(), {0, step_key}, param.index, projected_grads,
                                  distribution_ == NoiseDistribution::Gaussian)
        .view(v.sizes());
  }
#endif
  throw std::invalid_argument("combine_on_device needs the counter RNG on a CUDA device (CUDA build)");
}

}  // namespace prge

#include "prge/adapter_buffer.h"

#ifdef PRGE_WITH_CUDA
#include "prge/cuda/adapter_kernels.h"
#endif

#include <stdexcept>

namespace prge {

bool use_cuda_kernels(const torch::Device& device, NoiseRng rng) {
#ifdef PRGE_WITH_CUDA
  return device.is_cuda() && rng == NoiseRng::Counter;
#else
  (void)device;
  (void)rng;
  return false;
#endif
}

AdapterBuffer::AdapterBuffer(const std::vector<LoraFaLinear*>& layers) {
  if (layers.empty()) return;
  int64_t total = 0;
  for (auto* layer : layers) {
    segments_.push_back({layer->param_index(), total, layer->lora_b().numel()});
    total += layer->lora_b().numel();
  }
  const auto& first = layers.front()->lora_b();
  values_ = torch::empty({total}, first.options().dtype(torch::kFloat32));
  std::vector<int64_t> table;
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto& s = segments_[i];
    auto view = values_.narrow(0, s.offset, s.numel).view(layers[i]->lora_b().sizes());
    view.copy_(layers[i]->lora_b());
    layers[i]->set_lora_b(view);
    table.insert(table.end(), {s.offset, s.numel, s.param_index});
  }
  segment_table_ = torch::tensor(table, torch::kInt64).view({-1, 3}).to(values_.device());
}

torch::Tensor AdapterBuffer::direction_aten(const PerturbationStream& stream, int64_t step,
                                            const torch::Tensor& g) const {
  const int64_t q = g.size(0);
  auto out = torch::empty_like(values_);
  auto g32 = g.to(values_.device(), torch::kFloat32);
  for (const auto& s : segments_) {
    auto z = stream.noise_block(step, s.param_index, q, {s.numel}, values_.device());  // [q, n]
    out.narrow(0, s.offset, s.numel).copy_(at::matmul(g32, z).div_(static_cast<double>(q)));
  }
  return out;
}

torch::Tensor AdapterBuffer::direction(const PerturbationStream& stream, int64_t step,
                                       const torch::Tensor& g, const torch::Tensor& step_key) const {
  if (empty()) throw std::logic_error("adapter buffer is empty");
#ifdef PRGE_WITH_CUDA
  if (use_cuda_kernels(values_.device(), stream.rng())) {
    auto out = torch::empty_like(values_);
    cuda::rge_direction(segment_table_, g, step_key,
                        stream.distribution() == NoiseDistribution::Gaussian, out);
    return out;
  }
#endif
  (void)step_key;
  return direction_aten(stream, step, g);
}

}  // namespace prge

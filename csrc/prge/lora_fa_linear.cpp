#include "prge/lora_fa_linear.h"

#include <fmt/format.h>

#include <cmath>
#include <mutex>
#include <stdexcept>

namespace prge {

LoraFaLinear::LoraFaLinear(torch::Tensor weight, std::string name)
    : weight_(std::move(weight)), name_(std::move(name)) {
  if (weight_.dim() != 2) {
    throw std::invalid_argument(
        fmt::format("linear '{}' expects a 2-D weight, got {} dims", name_, weight_.dim()));
  }
}

void LoraFaLinear::attach_adapter(int64_t rank, double alpha, uint64_t init_seed,
                                  int64_t param_index) {
  if (rank <= 0) throw std::invalid_argument("LoRA rank must be positive");
  const int64_t in_features = weight_.size(1);
  const int64_t out_features = weight_.size(0);
  at::Generator generator = at::globalContext().defaultGenerator(torch::kCPU).clone();
  {
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_current_seed(derive_seed(init_seed, -1, param_index, 0));
  }
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
  lora_a_ = at::empty({rank, in_features}, torch::kFloat32)
                .uniform_(-bound, bound, generator)
                .to(weight_.device(), weight_.scalar_type());
  lora_b_ = torch::zeros({out_features, rank},
                         torch::TensorOptions().dtype(torch::kFloat32).device(weight_.device()));
  scaling_ = alpha / static_cast<double>(rank);
  param_index_ = param_index;
}

torch::Tensor LoraFaLinear::forward(const torch::Tensor& x, const MaterializedPlan* plan) const {
  auto y = at::linear(x, weight_);
  if (!has_adapter()) return y;
  auto ax = at::linear(x, lora_a_);
  const int64_t copies = plan ? plan->plan->copies() : 1;
  const int64_t rows = x.numel() / x.size(-1);
  if (rows % copies != 0) {
    throw std::invalid_argument(fmt::format(
        "layer '{}': {} rows cannot be split into {} perturbation copies", name_, rows, copies));
  }
  if (!plan || !plan->plan->perturbs()) {
    // One copy of B for every row: a plain addmm keeps autograd (first-order path) simple.
    auto b = lora_b_.to(y.scalar_type());
    return y.add_(at::linear(ax, b), scaling_);
  }
  auto b_copies = plan->stack(lora_b_, param_index_).to(y.scalar_type());  // [C, out, r]
  const int64_t out = y.size(-1);
  auto grouped = y.view({copies, rows / copies, out});
  grouped.baddbmm_(ax.reshape({copies, rows / copies, ax.size(-1)}), b_copies.transpose(1, 2), 1.0,
                   scaling_);
  return y;
}

void LoraFaLinear::to(const torch::Device& device, torch::ScalarType dtype) {
  weight_ = weight_.to(device, dtype);
  if (has_adapter()) {
    lora_a_ = lora_a_.to(device, dtype);
    lora_b_ = lora_b_.to(device, torch::kFloat32);
  }
}

}  // namespace prge

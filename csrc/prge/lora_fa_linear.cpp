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

void LoraFaLinear::share_storage(torch::Tensor weight_view, torch::Tensor lora_a_view) {
  weight_ = std::move(weight_view);
  if (lora_a_view.defined()) lora_a_ = std::move(lora_a_view);
}

void LoraFaLinear::set_lora_b(torch::Tensor view) {
  if (view.sizes() != lora_b_.sizes()) throw std::invalid_argument("set_lora_b: shape mismatch");
  lora_b_ = std::move(view);
}

GroupMember LoraFaLinear::as_member(int64_t row_offset, int64_t col_offset) const {
  return {&lora_b_, param_index_, row_offset, col_offset};
}

void add_low_rank(torch::Tensor& y, const torch::Tensor& ax, const torch::Tensor& b_stack,
                  double scaling, const std::string& name) {
  const int64_t copies = b_stack.size(0);
  const int64_t rows = ax.numel() / ax.size(-1);
  if (rows % copies != 0) {
    throw std::invalid_argument(fmt::format(
        "layer '{}': {} rows cannot be split into {} perturbation copies", name, rows, copies));
  }
  // Either way one GEMM whose epilogue adds into y (beta = 1): y is read and written once,
  // with no temporary of its size.
  if (copies == 1) {
    y.view({rows, y.size(-1)}).addmm_(ax.reshape({rows, ax.size(-1)}), b_stack.select(0, 0).t(), 1.0, scaling);
    return;
  }
  const int64_t out = y.size(-1);
  y.view({copies, rows / copies, out})
      .baddbmm_(ax.reshape({copies, rows / copies, ax.size(-1)}), b_stack.transpose(1, 2), 1.0,
                scaling);
}

torch::Tensor LoraFaLinear::forward(const torch::Tensor& x, const MaterializedPlan* plan,
                                    const torch::Tensor& weight) const {
  auto y = at::linear(x, weight.defined() ? weight : weight_);
  if (!has_adapter()) return y;
  const bool perturbed = plan && plan->plan->perturbs();
  // Unperturbed copies all share B: one plain GEMM serves every row.
  auto b = perturbed ? plan->group_copies({as_member(0, 0)}, lora_b_.size(0), lora_b_.size(1), y.scalar_type())
                     : lora_b_.unsqueeze(0).to(y.scalar_type());
  add_low_rank(y, at::linear(x, lora_a_), b, scaling_, name_);
  return y;
}

}  // namespace prge

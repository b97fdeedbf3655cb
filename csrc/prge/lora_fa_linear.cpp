#include "prge/lora_fa_linear.h"

#include <fmt/format.h>

#include <cmath>
#include <mutex>
#include <stdexcept>

namespace prge {

LoraFaLinear::LoraFaLinear(torch::Tensor weight, std::string name, torch::Tensor bias)
    : weight_(std::move(weight)), bias_(std::move(bias)), name_(std::move(name)) {
  if (weight_.dim() != 2) {
    throw std::invalid_argument(
        fmt::format("linear '{}' expects a 2-D weight, got {} dims", name_, weight_.dim()));
  }
}

void LoraFaLinear::attach_adapter(int64_t rank, double scaling, uint64_t init_seed,
                                  int64_t param_index) {
  if (rank <= 0) throw std::invalid_argument(fmt::format("layer '{}': LoRA rank must be positive", name_));
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
  weight_and_a_ = torch::Tensor();  // a new A: fold again to stack it under W
  scaling_ = scaling;
  param_index_ = param_index;
}

void LoraFaLinear::share_storage(torch::Tensor weight_view, torch::Tensor lora_a_view, torch::Tensor bias_view) {
  weight_ = std::move(weight_view);
  if (lora_a_view.defined()) lora_a_ = std::move(lora_a_view);
  if (bias_view.defined()) bias_ = std::move(bias_view);
}

void LoraFaLinear::set_lora_b(torch::Tensor view) {
  if (view.sizes() != lora_b_.sizes()) throw std::invalid_argument("set_lora_b: shape mismatch");
  lora_b_ = std::move(view);
}

bool lora_a_foldable(const torch::Tensor& weight, const torch::Tensor& lora_a, const torch::Tensor& bias) {
  if (!lora_a.defined() || bias.defined() || weight.dim() != 2 || weight.stride(0) == 0) return false;
  // On CUDA, rows of [out + r] elements 16 bytes apart in every dtype: the layer kernels' vector
  // accesses (the ATen ops take any row stride).
  return lora_a.scalar_type() == weight.scalar_type() && lora_a.size(1) == weight.size(1) &&
         (!weight.is_cuda() || (weight.size(0) + lora_a.size(0)) % 8 == 0);
}

bool takes_folded_path(const torch::Tensor& weight_and_a, const torch::Tensor& weight, const torch::Tensor& bias) {
  return weight_and_a.defined() && !weight.defined() && !bias.defined() && !at::GradMode::is_enabled();
}

torch::Tensor fold_into_one(torch::Tensor& weight, torch::Tensor& lora_a) {
  auto both = torch::cat({weight, lora_a}, 0);
  const int64_t out = weight.size(0);
  weight = both.narrow(0, 0, out);
  lora_a = both.narrow(0, out, lora_a.size(0));
  return both;
}

bool LoraFaLinear::fold_lora_a(bool on) {
  if (!on) {
    weight_and_a_ = torch::Tensor();
  } else if (!weight_and_a_.defined() && lora_a_foldable(weight_, lora_a_, bias_)) {
    weight_and_a_ = fold_into_one(weight_, lora_a_);
  }
  return weight_and_a_.defined();
}

GroupMember LoraFaLinear::as_member(int64_t row_offset, int64_t col_offset) const {
  return {&lora_b_, param_index_, row_offset, col_offset};
}

CopyStackRequest LoraFaLinear::copy_request() const {
  return {{as_member(0, 0)}, lora_b_.size(0), lora_b_.size(1)};
}

namespace {
// The rows of x ([..., in]) split into the copies of the plan; std::invalid_argument otherwise.
int64_t rows_in_copies(const torch::Tensor& x, int64_t copies, const std::string& name) {
  const int64_t rows = x.numel() / x.size(-1);
  if (rows % copies != 0) {
    throw std::invalid_argument(fmt::format(
        "layer '{}': {} rows cannot be split into {} perturbation copies", name, rows, copies));
  }
  return rows;
}
}  // namespace

torch::Tensor linear_plus_low_rank(const torch::Tensor& x, const torch::Tensor& weight,
                                   const torch::Tensor& ax, const torch::Tensor& b_stack,
                                   double scaling, const std::string& name, const torch::Tensor& bias) {
  const int64_t copies = b_stack.size(0), r = ax.size(-1);
  const int64_t in = x.size(-1), out = weight.size(0);
  const int64_t rows = rows_in_copies(x, copies, name);
  auto sizes = x.sizes().vec();
  sizes.back() = out;
  const auto x2 = x.reshape({rows, in});
  if (at::GradMode::is_enabled()) {  // autograd (the first-order reference): no out= ops
    auto low = copies == 1 ? at::mm(ax.reshape({rows, r}), b_stack.select(0, 0).t())
                           : at::bmm(ax.reshape({copies, rows / copies, r}), b_stack.transpose(1, 2));
    auto y = at::addmm(low.reshape({rows, out}), x2, weight.t(), scaling, 1.0).view(sizes);
    return bias.defined() ? y + bias : y;
  }
  auto y = at::empty(sizes, x.options());
  auto y2 = y.view({rows, out});
  const auto add_low_rank = [&](double beta) {  // y = beta * y + scaling * (A x) B_cᵀ
    if (copies == 1) {
      at::addmm_out(y2, y2, ax.reshape({rows, r}), b_stack.select(0, 0).t(), beta, scaling);
    } else {
      auto y3 = y.view({copies, rows / copies, out});
      at::baddbmm_out(y3, y3, ax.reshape({copies, rows / copies, r}), b_stack.transpose(1, 2), beta, scaling);
    }
  };
  if (bias.defined()) {
    // The frozen GEMM writes y with the bias added in its epilogue (on CUDA ATen takes
    // cuBLASLt's bias epilogue for a 1-D bias, as at::linear does), the low-rank term adds into it.
    at::addmm_out(y2, bias, x2, weight.t());
    add_low_rank(1.0);
  } else {
    add_low_rank(0.0);  // beta = 0: y's uninitialised contents are never read
    y2.addmm_(x2, weight.t(), 1.0, 1.0);
  }
  return y;
}

torch::Tensor folded_linear_plus_low_rank(const torch::Tensor& x, const torch::Tensor& weight_and_a, int64_t out,
                                          const torch::Tensor& b_stack, double scaling, const std::string& name) {
  const int64_t copies = b_stack.size(0), width = weight_and_a.size(0), r = width - out;
  const int64_t rows = rows_in_copies(x, copies, name);
  auto both = at::linear(x, weight_and_a);  // [..., out + r] = [x Wᵀ | A x]
  if (copies == 1) {
    auto both2 = both.view({rows, width});
    auto y2 = both2.narrow(1, 0, out);
    at::addmm_out(y2, y2, both2.narrow(1, out, r), b_stack.select(0, 0).t(), 1.0, scaling);
  } else {
    auto both3 = both.view({copies, rows / copies, width});
    auto y3 = both3.narrow(2, 0, out);
    at::baddbmm_out(y3, y3, both3.narrow(2, out, r), b_stack.transpose(1, 2), 1.0, scaling);
  }
  return both.narrow(-1, 0, out);
}

torch::Tensor LoraFaLinear::forward(const torch::Tensor& x, const MaterializedPlan* plan,
                                    const torch::Tensor& weight, const torch::Tensor& bias) const {
  const auto& w = weight.defined() ? weight : weight_;
  const auto& b_frozen = bias.defined() ? bias : bias_;
  if (!has_adapter()) return at::linear(x, w, b_frozen);
  const bool perturbed = plan && plan->plan->perturbs();
  // Unperturbed copies all share B: one plain GEMM serves every row.
  auto b = perturbed ? plan->group_copies(copy_request(), x.scalar_type()) : lora_b_.unsqueeze(0).to(x.scalar_type());
  if (takes_folded_path(weight_and_a_, weight, b_frozen)) {
    return folded_linear_plus_low_rank(x, weight_and_a_, weight_.size(0), b, scaling_, name_);
  }
  return linear_plus_low_rank(x, w, at::linear(x, lora_a_), b, scaling_, name_, b_frozen);
}

}  // namespace prge

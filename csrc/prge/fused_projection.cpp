#include "prge/fused_projection.h"

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

namespace prge {

FusedLoraFaProjection::FusedLoraFaProjection(const std::vector<torch::Tensor>& weights,
                                             const std::vector<std::string>& names,
                                             const std::vector<torch::Tensor>& biases) {
  if (weights.empty() || weights.size() != names.size() || (!biases.empty() && biases.size() != weights.size())) {
    throw std::invalid_argument("fused projection needs one name (and bias, if any) per weight");
  }
  // Weights kept quantized elsewhere arrive as expanded zeros (shape only): keep the fused one so.
  const bool shapes_only = std::all_of(weights.begin(), weights.end(), [](const torch::Tensor& w) {
    return w.dim() == 2 && w.stride(0) == 0 && w.stride(1) == 0;
  });
  if (shapes_only) {
    int64_t rows = 0;
    for (const auto& w : weights) rows += w.size(0);
    weight_ = torch::zeros({1, 1}, weights.front().options()).expand({rows, weights.front().size(1)});
  } else {
    weight_ = torch::cat(weights, 0);
  }
  if (!biases.empty()) bias_ = torch::cat(biases, 0);
  int64_t offset = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    const int64_t rows = weights[i].size(0);
    parts_.emplace_back(weight_.narrow(0, offset, rows), names[i],
                        bias_.defined() ? bias_.narrow(0, offset, rows) : torch::Tensor());
    sizes_.push_back(rows);
    offsets_.push_back(offset);
    offset += rows;
  }
}

void FusedLoraFaProjection::refresh_adapters() {
  weight_and_a_ = torch::Tensor();  // new A tensors: fold again to stack them under W
  adapted_.clear();
  a_offsets_.clear();
  one_scaling_ = true;
  std::vector<torch::Tensor> as;
  int64_t rows = 0;
  for (size_t i = 0; i < parts_.size(); ++i) {
    if (!parts_[i].has_adapter()) continue;
    if (!adapted_.empty() && parts_[i].scaling() != parts_[adapted_.front()].scaling()) one_scaling_ = false;
    adapted_.push_back(i);
    a_offsets_.push_back(rows);
    rows += parts_[i].lora_a().size(0);
    as.push_back(parts_[i].lora_a());
  }
  if (as.empty()) return;
  lora_a_ = torch::cat(as, 0);
  for (size_t j = 0; j < adapted_.size(); ++j) {
    auto& p = parts_[adapted_[j]];
    p.share_storage(p.weight(), lora_a_.narrow(0, a_offsets_[j], p.lora_a().size(0)), p.bias());
  }
}

bool FusedLoraFaProjection::fold_lora_a(bool on) {
  if (!on) {
    weight_and_a_ = torch::Tensor();
  } else if (!weight_and_a_.defined() && one_scaling_ && lora_a_foldable(weight_, lora_a_, bias_)) {
    weight_and_a_ = fold_into_one(weight_, lora_a_);
    for (size_t i = 0; i < parts_.size(); ++i) {
      auto& p = parts_[i];
      const auto a = std::find(adapted_.begin(), adapted_.end(), i);
      const auto a_view = a == adapted_.end()
                              ? torch::Tensor()
                              : lora_a_.narrow(0, a_offsets_[a - adapted_.begin()], p.lora_a().size(0));
      p.share_storage(weight_.narrow(0, offsets_[i], sizes_[i]), a_view, p.bias());
    }
  }
  return weight_and_a_.defined();
}

CopyStackRequest FusedLoraFaProjection::fused_request() const {
  CopyStackRequest request{{}, weight_.size(0), lora_a_.size(0)};
  for (size_t j = 0; j < adapted_.size(); ++j) {
    request.members.push_back(parts_[adapted_[j]].as_member(offsets_[adapted_[j]], a_offsets_[j]));
  }
  return request;
}

std::vector<CopyStackRequest> FusedLoraFaProjection::copy_requests() const {
  if (adapted_.empty()) return {};
  if (one_scaling_) return {fused_request()};
  std::vector<CopyStackRequest> out;
  for (auto i : adapted_) out.push_back(parts_[i].copy_request());
  return out;
}

torch::Tensor FusedLoraFaProjection::forward_fused(const torch::Tensor& x, const MaterializedPlan* plan,
                                                   const torch::Tensor& weight, const torch::Tensor& bias) const {
  const auto& w = weight.defined() ? weight : weight_;
  const auto& b_frozen = bias.defined() ? bias : bias_;
  if (adapted_.empty()) return at::linear(x, w, b_frozen);
  if (!one_scaling_) {  // parts with their own scalings (PEFT alpha_pattern / rank_pattern): one layer each
    std::vector<torch::Tensor> outputs;
    for (size_t i = 0; i < parts_.size(); ++i) {
      outputs.push_back(parts_[i].forward(x, plan, w.narrow(0, offsets_[i], sizes_[i]),
                                          b_frozen.defined() ? b_frozen.narrow(0, offsets_[i], sizes_[i])
                                                             : torch::Tensor()));
    }
    return torch::cat(outputs, -1);
  }
  const auto blocks = fused_copies(plan, x);
  const auto& first = parts_[adapted_.front()];
  if (takes_folded_path(weight_and_a_, weight, b_frozen)) {
    return folded_linear_plus_low_rank(x, weight_and_a_, weight_.size(0), blocks, first.scaling(), first.name());
  }
  return linear_plus_low_rank(x, w, at::linear(x, lora_a_), blocks, first.scaling(), first.name(), b_frozen);
}

torch::Tensor FusedLoraFaProjection::fused_copies(const MaterializedPlan* plan, const torch::Tensor& x) const {
  const auto request = fused_request();
  // Unperturbed, every row shares one B (a size-1 stack: one plain GEMM).
  if (plan && plan->plan->perturbs()) return plan->group_copies(request, x.scalar_type());
  return request.assemble(1, x.options(), [](const GroupMember& m) { return *m.lora_b; });
}

bool FusedLoraFaProjection::splits_low_rank_term() const {
  if (adapted_.size() != parts_.size() || !one_scaling_) return false;
  return std::all_of(parts_.begin(), parts_.end(),
                     [&](const LoraFaLinear& p) { return p.lora_a().size(0) == parts_.front().lora_a().size(0); });
}

int64_t FusedLoraFaProjection::rank() const { return splits_low_rank_term() ? parts_.front().lora_a().size(0) : 0; }

torch::Tensor FusedLoraFaProjection::forward_frozen(const torch::Tensor& x, const MaterializedPlan* plan,
                                                    LowRankTerm& term, const torch::Tensor& weight,
                                                    const torch::Tensor& bias) const {
  if (!splits_low_rank_term()) {
    throw std::logic_error("forward_frozen: the projection's parts are not all adapted with one rank and scaling");
  }
  const auto& b_frozen = bias.defined() ? bias : bias_;
  term.b_stack = fused_copies(plan, x);
  term.scaling = parts_.front().scaling();
  if (takes_folded_path(weight_and_a_, weight, b_frozen)) {  // one GEMM: [x W^T | A x]
    const int64_t out = weight_.size(0);
    auto both = at::linear(x, weight_and_a_);
    term.ax = both.narrow(-1, out, lora_a_.size(0));
    return both.narrow(-1, 0, out);
  }
  term.ax = at::linear(x, lora_a_);
  return at::linear(x, weight.defined() ? weight : weight_, b_frozen);
}

}  // namespace prge

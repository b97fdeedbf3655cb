#include "prge/perturbation_plan.h"

#include <stdexcept>

namespace prge {

bool PerturbationPlan::perturbs() const {
  for (double s : copy_scale) {
    if (s != 0.0) return true;
  }
  return false;
}

PerturbationPlan PerturbationPlan::central_dual(const PerturbationStream& stream, int64_t step,
                                                int64_t queries, double epsilon) {
  PerturbationPlan plan{&stream, step, queries, {}, {}};
  for (double sign : {1.0, -1.0}) {
    for (int64_t i = 0; i < queries; ++i) {
      plan.copy_query.push_back(i);
      plan.copy_scale.push_back(sign * epsilon);
    }
  }
  return plan;
}

PerturbationPlan PerturbationPlan::one_sided(const PerturbationStream& stream, int64_t step,
                                             int64_t queries, double scale) {
  PerturbationPlan plan{&stream, step, queries, {}, {}};
  for (int64_t i = 0; i < queries; ++i) {
    plan.copy_query.push_back(i);
    plan.copy_scale.push_back(scale);
  }
  return plan;
}

PerturbationPlan PerturbationPlan::single_query(const PerturbationStream& stream, int64_t step,
                                                int64_t queries, int64_t query, double scale) {
  return PerturbationPlan{&stream, step, queries, {query}, {scale}};
}

PerturbationPlan PerturbationPlan::forward_difference(const PerturbationStream& stream, int64_t step,
                                                      int64_t queries, double epsilon) {
  PerturbationPlan plan{&stream, step, queries, {0}, {0.0}};
  for (int64_t i = 0; i < queries; ++i) {
    plan.copy_query.push_back(i);
    plan.copy_scale.push_back(epsilon);
  }
  return plan;
}

MaterializedPlan MaterializedPlan::build(const PerturbationPlan& plan, const torch::Device& device) {
  if (plan.copies() == 0) throw std::invalid_argument("perturbation plan has no copies");
  MaterializedPlan m;
  m.plan = &plan;
  const int64_t q = plan.queries;
  m.is_central_dual = plan.copies() == 2 * q && q > 0;
  for (int64_t c = 0; m.is_central_dual && c < plan.copies(); ++c) {
    const double expected = c < q ? plan.copy_scale[0] : -plan.copy_scale[0];
    m.is_central_dual = plan.copy_query[c] == c % q && plan.copy_scale[c] == expected;
  }
  m.dual_epsilon = plan.copy_scale.empty() ? 0.0 : plan.copy_scale[0];
  m.query_index = torch::tensor(plan.copy_query, torch::kInt64).to(device);
  m.scale = torch::tensor(plan.copy_scale, torch::kFloat64)
                .to(torch::kFloat32)
                .view({-1, 1, 1})
                .to(device);
  return m;
}

torch::Tensor MaterializedPlan::stack(const torch::Tensor& lora_b, int64_t param_index) const {
  const auto& p = *plan;
  if (!p.perturbs()) return lora_b.unsqueeze(0).expand({p.copies(), -1, -1});
  auto z = p.stream->noise_block(p.step, param_index, p.queries, lora_b.sizes(), lora_b.device());
  if (is_central_dual) {
    // Eq. (P-RGE dual): B ± eps z_i, two fused axpys instead of a gather.
    auto scaled = z.mul_(dual_epsilon);
    return torch::cat({lora_b.unsqueeze(0) + scaled, lora_b.unsqueeze(0) - scaled}, 0);
  }
  return lora_b.unsqueeze(0) + z.index_select(0, query_index) * scale;
}

}  // namespace prge

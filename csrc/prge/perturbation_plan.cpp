#include "prge/perturbation_plan.h"

#include "prge/adapter_buffer.h"
#include "prge/counter_rng.h"

#ifdef PRGE_WITH_CUDA
#include "prge/cuda/adapter_kernels.h"
#endif

#include <stdexcept>

namespace prge {

bool PerturbationPlan::perturbs() const {
  for (double s : copy_scale) {
    if (s != 0.0) return true;
  }
  return false;
}

PerturbationPlan PerturbationPlan::queries_at(const PerturbationStream& stream, int64_t step, int64_t queries,
                                              int64_t begin, int64_t end, const std::vector<double>& scales,
                                              bool center) {
  PerturbationPlan plan{&stream, step, queries, {}, {}};
  if (center) {
    plan.copy_query.push_back(0);
    plan.copy_scale.push_back(0.0);
  }
  for (double scale : scales) {
    for (int64_t i = begin; i < end; ++i) {
      plan.copy_query.push_back(i);
      plan.copy_scale.push_back(scale);
    }
  }
  return plan;
}

PerturbationPlan PerturbationPlan::unperturbed(const PerturbationStream& stream, int64_t step,
                                               int64_t queries) {
  return queries_at(stream, step, queries, 0, 0, {}, /*center=*/true);
}

PerturbationPlan PerturbationPlan::central_dual(const PerturbationStream& stream, int64_t step,
                                                int64_t queries, double epsilon) {
  return queries_at(stream, step, queries, 0, queries, {epsilon, -epsilon});
}

PerturbationPlan PerturbationPlan::one_sided(const PerturbationStream& stream, int64_t step,
                                             int64_t queries, double scale) {
  return queries_at(stream, step, queries, 0, queries, {scale});
}

PerturbationPlan PerturbationPlan::single_query(const PerturbationStream& stream, int64_t step,
                                                int64_t queries, int64_t query, double scale) {
  return queries_at(stream, step, queries, query, query + 1, {scale});
}

PerturbationPlan PerturbationPlan::forward_difference(const PerturbationStream& stream, int64_t step,
                                                      int64_t queries, double epsilon) {
  return queries_at(stream, step, queries, 0, queries, {epsilon}, /*center=*/true);
}

MaterializedPlan MaterializedPlan::build(const PerturbationPlan& plan, const torch::Device& device,
                                         torch::Tensor step_key) {
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
  m.scale = torch::tensor(plan.copy_scale, torch::kFloat64).to(torch::kFloat32).to(device);
  m.step_key = step_key.defined()
                   ? step_key
                   : torch::tensor({static_cast<int64_t>(counter_rng::step_key(plan.stream->seed(), plan.step))},
                                   torch::kInt64)
                         .to(device);
  m.cuda_kernels = use_cuda_kernels(device, plan.stream->rng());
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
  return lora_b.unsqueeze(0) + z.index_select(0, query_index) * scale.view({-1, 1, 1});
}

torch::Tensor MaterializedPlan::group_copies(const std::vector<GroupMember>& members, int64_t rows,
                                             int64_t cols, torch::ScalarType dtype) const {
  const int64_t copies = plan->copies();
  auto options = members.front().lora_b->options().dtype(dtype);
#ifdef PRGE_WITH_CUDA
  if (cuda_kernels) {
    std::vector<cuda::GroupPart> parts;
    std::vector<int64_t> layout{copies, rows, cols, static_cast<int64_t>(dtype)};
    for (const auto& m : members) {
      parts.push_back({m.lora_b->data_ptr<float>(), m.lora_b->size(0), m.lora_b->size(1), m.row_offset,
                       m.col_offset, m.param_index});
      layout.insert(layout.end(), {m.lora_b->size(0), m.lora_b->size(1), m.row_offset, m.col_offset});
    }
    auto& out = zeroed_stacks[layout];
    if (!out.defined()) out = torch::zeros({copies, rows, cols}, options);
    cuda::fill_group_blocks(parts.data(), static_cast<int>(parts.size()), query_index, scale, step_key,
                            plan->stream->distribution() == NoiseDistribution::Gaussian, out);
    return out;
  }
#endif
  const auto& only = members.front();
  if (members.size() == 1 && only.lora_b->size(0) == rows && only.lora_b->size(1) == cols) {
    return stack(*only.lora_b, only.param_index).to(dtype);
  }
  auto blocks = torch::zeros({copies, rows, cols}, options);
  for (const auto& m : members) {
    blocks.narrow(1, m.row_offset, m.lora_b->size(0))
        .narrow(2, m.col_offset, m.lora_b->size(1))
        .copy_(stack(*m.lora_b, m.param_index));
  }
  return blocks;
}

}  // namespace prge

#include "prge/perturbation_plan.h"

#include "prge/adapter_buffer.h"
#include "prge/counter_rng.h"

#ifdef PRGE_WITH_CUDA
#include "prge/cuda/adapter_kernels.h"
#endif

#include <algorithm>
#include <stdexcept>
#include <tuple>
#include <utility>

namespace prge {

torch::Tensor CopyStackRequest::assemble(int64_t copies, const torch::TensorOptions& options,
                                         const std::function<torch::Tensor(const GroupMember&)>& copies_of) const {
  auto blocks = torch::zeros({copies, rows, cols}, options);
  for (const auto& m : members) {
    blocks.narrow(1, m.row_offset, m.lora_b->size(0)).narrow(2, m.col_offset, m.lora_b->size(1)).copy_(copies_of(m));
  }
  return blocks;
}

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

namespace {
// The plan's distinct queries in order of first use ([U]) and, per query, the copies that use
// it ([U, S], -1 padded).
std::pair<torch::Tensor, torch::Tensor> copies_by_query(const PerturbationPlan& plan, const torch::Device& device) {
  std::vector<int64_t> queries;
  std::vector<std::vector<int64_t>> copies_of;
  for (int64_t c = 0; c < plan.copies(); ++c) {
    const auto at = std::find(queries.begin(), queries.end(), plan.copy_query[c]) - queries.begin();
    if (at == static_cast<int64_t>(queries.size())) {
      queries.push_back(plan.copy_query[c]);
      copies_of.emplace_back();
    }
    copies_of[at].push_back(c);
  }
  size_t widest = 0;
  for (const auto& row : copies_of) widest = std::max(widest, row.size());
  std::vector<int64_t> padded;
  for (const auto& row : copies_of) {
    padded.insert(padded.end(), row.begin(), row.end());
    padded.insert(padded.end(), widest - row.size(), -1);
  }
  const auto rows = static_cast<int64_t>(queries.size());
  return {torch::tensor(queries, torch::kInt64).to(device),
          torch::tensor(padded, torch::kInt64).view({rows, static_cast<int64_t>(widest)}).to(device)};
}
}  // namespace

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
  std::tie(m.noise_query, m.noise_copies) = copies_by_query(plan, device);
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

#ifdef PRGE_WITH_CUDA
namespace {
// The zeroed stack of `request` in `slot` (layout and slot are its key), and its parts.
std::vector<cuda::StackPart> stack_parts(const MaterializedPlan& m, const CopyStackRequest& request,
                                         int64_t slot, torch::ScalarType dtype, torch::Tensor& stack) {
  const int64_t copies = m.plan->copies();
  std::vector<int64_t> key{slot, copies, request.rows, request.cols, static_cast<int64_t>(dtype)};
  for (const auto& member : request.members) {
    const auto& b = *member.lora_b;
    key.insert(key.end(), {b.size(0), b.size(1), member.row_offset, member.col_offset});
  }
  auto& zeroed = m.zeroed_stacks[key];
  if (!zeroed.defined()) {
    zeroed = torch::zeros({copies, request.rows, request.cols}, request.members.front().lora_b->options().dtype(dtype));
  }
  stack = zeroed;
  std::vector<cuda::StackPart> parts;
  for (const auto& member : request.members) {
    const auto& b = *member.lora_b;
    parts.push_back({b.data_ptr<float>(), b.size(0), b.size(1), member.row_offset, member.col_offset,
                     member.param_index, stack.data_ptr(), request.rows, request.cols});
  }
  return parts;
}

void fill(const MaterializedPlan& m, const std::vector<cuda::StackPart>& parts, torch::ScalarType dtype) {
  cuda::fill_copy_stacks(parts, m.noise_query, m.noise_copies, m.scale, m.step_key,
                         m.plan->stream->distribution() == NoiseDistribution::Gaussian, dtype);
}
}  // namespace
#endif

void MaterializedPlan::prepare_copies(const std::vector<CopyStackRequest>& requests, torch::ScalarType dtype) const {
  prepared_stacks.clear();
#ifdef PRGE_WITH_CUDA
  if (!cuda_kernels || !plan->perturbs()) return;
  std::vector<cuda::StackPart> parts;
  for (size_t slot = 0; slot < requests.size(); ++slot) {
    torch::Tensor stack;
    auto more = stack_parts(*this, requests[slot], static_cast<int64_t>(slot) + 1, dtype, stack);
    parts.insert(parts.end(), more.begin(), more.end());
    prepared_stacks[requests[slot].members.front().lora_b->data_ptr()] = stack;
  }
  fill(*this, parts, dtype);
#endif
}

torch::Tensor MaterializedPlan::group_copies(const CopyStackRequest& request, torch::ScalarType dtype) const {
  const auto& members = request.members;
  const int64_t copies = plan->copies(), rows = request.rows, cols = request.cols;
  auto options = members.front().lora_b->options().dtype(dtype);
#ifdef PRGE_WITH_CUDA
  if (cuda_kernels) {
    // Handed out once: a later forward must fill again (or record the fill, under capture).
    auto ready = prepared_stacks.find(members.front().lora_b->data_ptr());
    if (ready != prepared_stacks.end() && ready->second.scalar_type() == dtype) {
      auto stack = ready->second;
      prepared_stacks.erase(ready);
      return stack;
    }
    torch::Tensor stack;
    fill(*this, stack_parts(*this, request, 0, dtype, stack), dtype);
    return stack;
  }
#endif
  const auto& only = members.front();
  if (members.size() == 1 && only.lora_b->size(0) == rows && only.lora_b->size(1) == cols) {
    return stack(*only.lora_b, only.param_index).to(dtype);
  }
  return request.assemble(copies, options, [&](const GroupMember& m) { return stack(*m.lora_b, m.param_index); });
}

}  // namespace prge

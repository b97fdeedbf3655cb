#pragma once
// A PerturbationPlan lists the parameter points one batched forward evaluates.
// The batch is repeated copies() times along dim 0 ([copies * b, T]); copy c uses
// B + copy_scale[c] * z[copy_query[c]] in every LoRA-FA layer (scale 0 = unperturbed).
#include "prge/perturbation.h"

#include <torch/torch.h>

#include <functional>
#include <map>
#include <vector>

namespace prge {

struct PerturbationPlan {
  const PerturbationStream* stream = nullptr;
  int64_t step = 0;
  int64_t queries = 0;  // size of the noise block each layer draws
  std::vector<int64_t> copy_query;
  std::vector<double> copy_scale;

  int64_t copies() const { return static_cast<int64_t>(copy_query.size()); }
  bool perturbs() const;

  // θ first when `center`, then the queries [begin, end) at each of `scales` in turn:
  // [s_0 z_begin .. s_0 z_{end-1}, s_1 z_begin ..]. Every factory below is one of these.
  static PerturbationPlan queries_at(const PerturbationStream& stream, int64_t step, int64_t queries,
                                     int64_t begin, int64_t end, const std::vector<double>& scales,
                                     bool center = false);
  // One copy at θ itself (the centre of a forward difference evaluated on its own).
  static PerturbationPlan unperturbed(const PerturbationStream& stream, int64_t step, int64_t queries);
  // P-RGE inner + outer loop ("dual"): [+eps z_0..z_{q-1}, -eps z_0..z_{q-1}], 2q copies.
  static PerturbationPlan central_dual(const PerturbationStream& stream, int64_t step,
                                       int64_t queries, double epsilon);
  // Outer loop only: q copies, all at `scale` (+eps or -eps).
  static PerturbationPlan one_sided(const PerturbationStream& stream, int64_t step, int64_t queries,
                                    double scale);
  // A single query at `scale` (sequential evaluation, as in ZO LoRA-FA).
  static PerturbationPlan single_query(const PerturbationStream& stream, int64_t step,
                                       int64_t queries, int64_t query, double scale);
  // Forward difference in one pass: [theta, theta + eps z_0, ..., theta + eps z_{q-1}].
  static PerturbationPlan forward_difference(const PerturbationStream& stream, int64_t step,
                                             int64_t queries, double epsilon);
};

// One adapted projection inside a group that shares a GEMM (q/k/v; gate/up): where its B's
// block sits in the group's block-diagonal copy stack [copies, rows, cols].
struct GroupMember {
  const torch::Tensor* lora_b = nullptr;  // [rows_m, r] float32
  int64_t param_index = 0;
  int64_t row_offset = 0;
  int64_t col_offset = 0;
};

// The copy stack one projection asks for, [copies, rows, cols]: each member's copies of its B
// in its block, zeros elsewhere (one member filling the whole stack: plain [copies, out, r]).
struct CopyStackRequest {
  std::vector<GroupMember> members;
  int64_t rows = 0;
  int64_t cols = 0;

  // The stack assembled from each member's copies ([copies, rows_m, r] from `copies_of`) on
  // the ATen path: a zeroed [copies, rows, cols] with every member's copies in its block.
  torch::Tensor assemble(int64_t copies, const torch::TensorOptions& options,
                         const std::function<torch::Tensor(const GroupMember&)>& copies_of) const;
};

// Device-side form of a plan, built once per forward and shared by all layers. Its tensors
// stay valid across steps, so a captured CUDA graph can keep using them: only step_key
// changes between replays.
struct MaterializedPlan {
  const PerturbationPlan* plan = nullptr;
  torch::Tensor query_index;  // [copies] int64
  torch::Tensor scale;        // [copies] float32
  // The copies grouped by query, for kernels that draw each query's z once: row u draws
  // z_{noise_query[u]} and serves the copies noise_copies[u] ([U, S] int64, -1 padded).
  torch::Tensor noise_query;
  torch::Tensor noise_copies;
  torch::Tensor step_key;     // [1] int64: counter_rng::step_key(seed, step) (counter RNG)
  bool is_central_dual = false;
  double dual_epsilon = 0.0;
  bool cuda_kernels = false;  // fill copies with the CUDA kernel (CUDA build, CUDA, counter RNG)
  // CUDA kernels: the stacks, one per layout and slot (a layer's stacks are filled together,
  // and two of its projections may share a layout), zeroed once and shared by every layer of
  // a forward (and every replay of a captured one): the kernel rewrites only the members'
  // blocks, the zeros around them stay.
  mutable std::map<std::vector<int64_t>, torch::Tensor> zeroed_stacks;
  // Stacks filled by prepare_copies and not yet handed out, by their first member's B.
  mutable std::map<const void*, torch::Tensor> prepared_stacks;

  // step_key: a persistent device tensor to read the key from (graph replay); undefined:
  // computed here from the plan's step.
  static MaterializedPlan build(const PerturbationPlan& plan, const torch::Device& device,
                                torch::Tensor step_key = {});
  // The copies of B this plan asks for: [copies, out, r], float32 (ATen path).
  torch::Tensor stack(const torch::Tensor& lora_b, int64_t param_index) const;
  // CUDA kernels: fills the stacks of several projections (one layer's) in one launch, ahead
  // of them; group_copies then hands each its stack without a launch of its own. Nothing
  // otherwise (the ATen path, or a plan that does not perturb).
  void prepare_copies(const std::vector<CopyStackRequest>& requests, torch::ScalarType dtype) const;
  // Every copy of a projection's (or group's) B in one stack of `dtype` (one kernel on CUDA,
  // none when prepare_copies filled it).
  torch::Tensor group_copies(const CopyStackRequest& request, torch::ScalarType dtype) const;
};

}  // namespace prge

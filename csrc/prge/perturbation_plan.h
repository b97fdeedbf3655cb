#pragma once
// A PerturbationPlan lists the parameter points one batched forward evaluates.
// The batch is repeated copies() times along dim 0 ([copies * b, T]); copy c uses
// B + copy_scale[c] * z[copy_query[c]] in every LoRA-FA layer (scale 0 = unperturbed).
#include "prge/perturbation.h"

#include <torch/torch.h>

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

// Device-side form of a plan, built once per forward and shared by all layers.
struct MaterializedPlan {
  const PerturbationPlan* plan = nullptr;
  torch::Tensor query_index;  // [copies] int64
  torch::Tensor scale;        // [copies, 1, 1] float32
  bool is_central_dual = false;
  double dual_epsilon = 0.0;

  static MaterializedPlan build(const PerturbationPlan& plan, const torch::Device& device);
  // The copies of B this plan asks for: [copies, out, r], float32.
  torch::Tensor stack(const torch::Tensor& lora_b, int64_t param_index) const;
};

}  // namespace prge

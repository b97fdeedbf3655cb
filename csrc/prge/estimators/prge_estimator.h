#pragma once
// RGE over LoRA-FA B with P-RGE parallelism: the outer loop batches the q queries into
// one forward ([q*b, T]) and the inner loop ("dual") adds the ±ε copies ([2q*b, T]).
// parallel: sequential with q = 1 is the plain ZO LoRA-FA baseline.
#include "prge/estimators/zo_estimator.h"
#include "prge/losses.h"
#include "prge/perturbation_plan.h"

namespace prge {

class PrgeEstimator final : public ZoEstimator {
 public:
  explicit PrgeEstimator(EstimatorOptions options);
  PointLosses evaluate_share(CausalLM& model, const TokenBatch& batch, int64_t step,
                             const PerturbationStream& stream, QueryRange range) override;
  std::vector<ZoParameter> parameters(CausalLM& model) const override;
  const EstimatorOptions& options() const override { return options_; }

 private:
  EstimatorOptions options_;
};

// Mean answer-token loss of each copy of `plan`, evaluated in one batched forward; every
// weight perturbed by `perturbation` when given (full-parameter MeZO).
std::vector<double> evaluate_plan(const CausalLM& model, const TokenBatch& batch,
                                  const PerturbationPlan& plan,
                                  const WeightPerturbation* perturbation = nullptr);

// P-RGE as plans of one forward each whose losses, concatenated, list the points of the
// queries in `range` in the order of zo_estimator.h (central [+εz.., −εz..], forward [θ, +εz..]).
// dual: one plan; queries: two (the + and − sides, or θ and the + side); sequential: one per point.
// Such a step runs on device tensors alone (no host sync), which lets the trainer capture
// it as a CUDA graph.
bool runs_on_device(const EstimatorOptions& options);  // every P-RGE mode
std::vector<PerturbationPlan> device_step_plans(const EstimatorOptions& options,
                                                const PerturbationStream& stream, int64_t step,
                                                QueryRange range = {});

struct DeviceEstimate {
  torch::Tensor losses;           // [points] float32, in the order above
  torch::Tensor projected_grads;  // [q] float32: g_i, from the losses in float64 as estimate() does
};

// input_ids: [b, T] on the model's device; layout: AnswerLayout of the batch's targets, same
// device; plans: device_step_plans(...) materialized, in order.
// The plans' losses, concatenated: [points] float32 on the device.
torch::Tensor losses_on_device(const CausalLM& model, const torch::Tensor& input_ids,
                               const AnswerLayout& layout, const std::vector<MaterializedPlan>& plans);

// g ([q] float32) from a step's losses ([points] float32 on the device, in the order above):
// (L+ - L-) / 2 eps (central) or (L+ - L(θ)) / eps (forward), in float64 as estimate() does;
// FZOO's divided by the standard deviation of its perturbed losses.
torch::Tensor projected_grads_on_device(const torch::Tensor& losses, const EstimatorOptions& options);

DeviceEstimate estimate_on_device(const CausalLM& model, const torch::Tensor& input_ids,
                                  const AnswerLayout& layout, const std::vector<MaterializedPlan>& plans,
                                  const EstimatorOptions& options);

}  // namespace prge

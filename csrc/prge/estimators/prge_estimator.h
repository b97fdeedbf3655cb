#pragma once
// RGE over LoRA-FA B with P-RGE parallelism: the outer loop batches the q queries into
// one forward ([q*b, T]) and the inner loop ("dual") adds the ±ε copies ([2q*b, T]).
// parallel: none with q = 1 is the plain ZO LoRA-FA baseline.
#include "prge/estimators/zo_estimator.h"
#include "prge/losses.h"
#include "prge/perturbation_plan.h"

namespace prge {

class PrgeEstimator final : public ZoEstimator {
 public:
  explicit PrgeEstimator(EstimatorOptions options);
  ZoEstimate estimate(LlamaModel& model, const TokenBatch& batch, int64_t step,
                      const PerturbationStream& stream) override;
  std::vector<ZoParameter> parameters(LlamaModel& model) const override;

 private:
  EstimatorOptions options_;
};

// Mean answer-token loss of each copy of `plan`, evaluated in one batched forward; every
// weight perturbed by `perturbation` when given (full-parameter MeZO).
std::vector<double> evaluate_plan(const LlamaModel& model, const TokenBatch& batch,
                                  const PerturbationPlan& plan,
                                  const WeightPerturbation* perturbation = nullptr);

// P-RGE with every evaluated point in ONE forward (parallel: dual): central [θ+εz_i, θ−εz_i]
// or forward [θ, θ+εz_i]. Such a step can run on device tensors alone (no host sync), which
// lets the trainer capture it as a CUDA graph.
bool evaluates_in_one_forward(const EstimatorOptions& options);
PerturbationPlan one_forward_plan(const EstimatorOptions& options, const PerturbationStream& stream,
                                  int64_t step);

struct DeviceEstimate {
  torch::Tensor losses;           // [copies] float32, in plan order
  torch::Tensor projected_grads;  // [q] float32: g_i, from the losses in float64 as estimate() does
};

// input_ids: [b, T] on the model's device; layout: AnswerLayout of the batch's targets, same device.
DeviceEstimate estimate_in_one_forward(const LlamaModel& model, const torch::Tensor& input_ids,
                                       const AnswerLayout& layout, const MaterializedPlan& plan,
                                       const EstimatorOptions& options);

}  // namespace prge

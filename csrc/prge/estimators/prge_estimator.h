#pragma once
// RGE over LoRA-FA B with P-RGE parallelism: the outer loop batches the q queries into
// one forward ([q*b, T]) and the inner loop ("dual") adds the ±ε copies ([2q*b, T]).
// parallel: none with q = 1 is the plain ZO LoRA-FA baseline.
#include "prge/estimators/zo_estimator.h"
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

// Mean answer-token loss of each copy of `plan`, evaluated in one batched forward.
std::vector<double> evaluate_plan(const LlamaModel& model, const TokenBatch& batch,
                                  const PerturbationPlan& plan);

}  // namespace prge

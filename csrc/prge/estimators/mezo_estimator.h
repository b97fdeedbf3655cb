#pragma once
// Full-parameter MeZO (Malladi et al., 2023): for each query, evaluate the loss at θ + εz
// and θ − εz (central) or θ + εz (forward); z is regenerated from the seed, never stored.
// Sequential forward passes of the unrepeated batch. Unlike MeZO's in-place perturb /
// restore, each layer's θ ± εz is formed inside the forward as a temporary
// (WeightPerturbation): the stored weights change only in the update, so with lr = 0 they
// stay bit-identical in any dtype, and each query saves two sweeps over every weight.
#include "prge/estimators/zo_estimator.h"

namespace prge {

class MezoEstimator final : public ZoEstimator {
 public:
  explicit MezoEstimator(EstimatorOptions options);
  PointLosses evaluate_share(CausalLM& model, const TokenBatch& batch, int64_t step,
                             const PerturbationStream& stream, QueryRange range) override;
  std::vector<ZoParameter> parameters(CausalLM& model) const override;
  const EstimatorOptions& options() const override { return options_; }

 private:
  EstimatorOptions options_;
};

}  // namespace prge

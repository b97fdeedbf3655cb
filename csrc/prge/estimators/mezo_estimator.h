#pragma once
// Full-parameter MeZO (Malladi et al., 2023): for each query, perturb every weight in
// place by +εz, evaluate, move to −εz, evaluate, and restore; z is regenerated from the
// seed each time, never stored. Sequential forward passes of the unrepeated batch.
#include "prge/estimators/zo_estimator.h"

namespace prge {

class MezoEstimator final : public ZoEstimator {
 public:
  explicit MezoEstimator(EstimatorOptions options);
  ZoEstimate estimate(LlamaModel& model, const TokenBatch& batch, int64_t step,
                      const PerturbationStream& stream) override;
  std::vector<ZoParameter> parameters(LlamaModel& model) const override;

  // θ ← θ + scale · z_query for every parameter (MeZO's perturb_parameters).
  static void perturb(const std::vector<ZoParameter>& params, const PerturbationStream& stream,
                      int64_t step, int64_t query, double scale);

 private:
  EstimatorOptions options_;
};

}  // namespace prge

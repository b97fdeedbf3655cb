#include "prge/estimators/mezo_estimator.h"

#include "prge/estimators/prge_estimator.h"

namespace prge {

MezoEstimator::MezoEstimator(EstimatorOptions options) : options_(std::move(options)) {
  options_.validate();
}

std::vector<ZoParameter> MezoEstimator::parameters(LlamaModel& model) const {
  return model.full_parameters();
}

ZoEstimate MezoEstimator::estimate(LlamaModel& model, const TokenBatch& batch, int64_t step,
                                   const PerturbationStream& stream) {
  batch.validate();
  const double eps = options_.epsilon;
  const auto unperturbed = PerturbationPlan{&stream, step, 1, {0}, {0.0}};  // no LoRA copies
  ZoEstimate out;
  out.step = step;
  auto loss_at = [&](const WeightPerturbation* perturbation) {
    out.forward_passes += 1;
    out.sequences += batch.size();
    const double loss = evaluate_plan(model, batch, unperturbed, perturbation)[0];
    out.losses.push_back(loss);
    return loss;
  };
  double sum = 0.0;
  const bool central = options_.difference == Difference::Central;
  const double center = central ? 0.0 : loss_at(nullptr);  // L(θ), shared by every query
  for (int64_t i = 0; i < options_.queries; ++i) {
    const WeightPerturbation plus_eps{&stream, step, i, eps}, minus_eps{&stream, step, i, -eps};
    double g = 0.0;
    if (central) {
      const double plus = loss_at(&plus_eps);
      const double minus = loss_at(&minus_eps);
      g = (plus - minus) / (2.0 * eps);
      sum += 0.5 * (plus + minus);
    } else {
      const double plus = loss_at(&plus_eps);
      g = (plus - center) / eps;
      sum += center;
    }
    out.projected_grads.push_back(g);
  }
  out.loss = sum / static_cast<double>(options_.queries);
  return out;
}

}  // namespace prge

#include "prge/estimators/mezo_estimator.h"

#include "prge/estimators/prge_estimator.h"

namespace prge {

MezoEstimator::MezoEstimator(EstimatorOptions options) : options_(std::move(options)) {
  options_.validate();
}

std::vector<ZoParameter> MezoEstimator::parameters(LlamaModel& model) const {
  return model.full_parameters();
}

void MezoEstimator::perturb(const std::vector<ZoParameter>& params, const PerturbationStream& stream,
                            int64_t step, int64_t query, double scale) {
  for (const auto& p : params) {
    auto z = stream.noise(step, p.index, query, p.value.sizes(), p.value.device());
    p.value.add_(z, scale);
  }
}

ZoEstimate MezoEstimator::estimate(LlamaModel& model, const TokenBatch& batch, int64_t step,
                                   const PerturbationStream& stream) {
  batch.validate();
  const auto params = parameters(model);
  const double eps = options_.epsilon;
  const auto unperturbed = PerturbationPlan{&stream, step, 1, {0}, {0.0}};
  ZoEstimate out;
  out.step = step;
  auto loss_now = [&]() {
    out.forward_passes += 1;
    out.sequences += batch.size();
    const double loss = evaluate_plan(model, batch, unperturbed)[0];
    out.losses.push_back(loss);
    return loss;
  };
  double sum = 0.0;
  const bool central = options_.difference == Difference::Central;
  const double center = central ? 0.0 : loss_now();  // L(θ), shared by every query
  for (int64_t i = 0; i < options_.queries; ++i) {
    double g = 0.0;
    if (central) {
      perturb(params, stream, step, i, eps);
      const double plus = loss_now();
      perturb(params, stream, step, i, -2.0 * eps);
      const double minus = loss_now();
      perturb(params, stream, step, i, eps);  // restore
      g = (plus - minus) / (2.0 * eps);
      sum += 0.5 * (plus + minus);
    } else {
      perturb(params, stream, step, i, eps);
      const double plus = loss_now();
      perturb(params, stream, step, i, -eps);  // restore
      g = (plus - center) / eps;
      sum += center;
    }
    out.projected_grads.push_back(g);
  }
  out.loss = sum / static_cast<double>(options_.queries);
  return out;
}

}  // namespace prge

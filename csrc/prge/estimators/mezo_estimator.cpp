#include "prge/estimators/mezo_estimator.h"

#include "prge/estimators/prge_estimator.h"

namespace prge {

MezoEstimator::MezoEstimator(EstimatorOptions options) : options_(std::move(options)) {
  options_.validate();
}

std::vector<ZoParameter> MezoEstimator::parameters(CausalLM& model) const {
  return model.full_parameters();
}

PointLosses MezoEstimator::evaluate_share(CausalLM& model, const TokenBatch& batch, int64_t step,
                                          const PerturbationStream& stream, QueryRange range) {
  batch.validate();
  check_range(options_, range);
  const double eps = options_.epsilon;
  const auto unperturbed = PerturbationPlan{&stream, step, 1, {0}, {0.0}};  // no LoRA copies
  PointLosses out;
  auto loss_at = [&](const WeightPerturbation* perturbation) {
    out.forward_passes += 1;
    out.sequences += batch.size();
    return evaluate_plan(model, batch, unperturbed, perturbation)[0];
  };
  const bool central = options_.difference == Difference::Central;
  std::vector<double> plus, minus;
  const bool with_center = !central && range.center;
  const double center = with_center ? loss_at(nullptr) : 0.0;  // L(θ), shared by every query
  for (int64_t i = range.begin; i < range.stop(options_.queries); ++i) {
    const WeightPerturbation plus_eps{&stream, step, i, eps}, minus_eps{&stream, step, i, -eps};
    plus.push_back(loss_at(&plus_eps));
    if (central) minus.push_back(loss_at(&minus_eps));
  }
  if (with_center) out.losses.push_back(center);
  out.losses.insert(out.losses.end(), plus.begin(), plus.end());
  out.losses.insert(out.losses.end(), minus.begin(), minus.end());
  return out;
}

bool mezo_runs_on_device(const CausalLM& model, const PerturbationStream& stream) {
  return stream.rng() == NoiseRng::Counter && model.kernels_apply();
}

DeviceEstimate mezo_estimate_on_device(const CausalLM& model, const torch::Tensor& input_ids,
                                       const AnswerLayout& layout, const PerturbationStream& stream,
                                       int64_t step, const torch::Tensor& step_key,
                                       const EstimatorOptions& options) {
  if (!mezo_runs_on_device(model, stream)) {
    throw std::invalid_argument("MeZO's device step needs the counter RNG and the CUDA layer kernels");
  }
  std::vector<torch::Tensor> losses;
  auto loss_at = [&](int64_t query, double scale) {
    const WeightPerturbation perturbation{&stream, step, query, scale, step_key};
    const auto* p = scale != 0.0 ? &perturbation : nullptr;
    losses.push_back(copy_losses(model, model.hidden_states(input_ids, nullptr, p), layout, 1, p));
  };
  const bool central = options.difference == Difference::Central;
  if (!central) loss_at(0, 0.0);  // L(θ), shared by every query
  for (int64_t i = 0; i < options.queries; ++i) loss_at(i, options.epsilon);
  for (int64_t i = 0; central && i < options.queries; ++i) loss_at(i, -options.epsilon);
  DeviceEstimate out;
  out.losses = torch::cat(losses);
  out.projected_grads = projected_grads_on_device(out.losses, options);
  return out;
}

}  // namespace prge

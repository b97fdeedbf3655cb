#include "prge/estimators/prge_estimator.h"

#include "prge/losses.h"

#include <cmath>
#include <stdexcept>

namespace prge {

std::vector<double> evaluate_plan(const CausalLM& model, const TokenBatch& batch,
                                  const PerturbationPlan& plan, const WeightPerturbation* perturbation) {
  const auto materialized = MaterializedPlan::build(plan, model.device());
  const auto repeated = batch.repeated(plan.copies(), model.device());
  const auto hidden = model.hidden_states(repeated.input_ids, &materialized, perturbation);
  const auto losses =
      copy_losses(score_sequences(model, hidden, repeated.targets, perturbation), plan.copies());
  return std::vector<double>(losses.data_ptr<double>(), losses.data_ptr<double>() + losses.numel());
}

bool runs_on_device(const EstimatorOptions& options) {
  return options.kind == EstimatorKind::Prge || options.kind == EstimatorKind::Fzoo;
}

std::vector<PerturbationPlan> device_step_plans(const EstimatorOptions& options,
                                                const PerturbationStream& stream, int64_t step,
                                                QueryRange range) {
  if (!runs_on_device(options)) throw std::invalid_argument("device_step_plans needs estimator.kind prge");
  check_range(options, range);
  const int64_t q = options.queries;
  const double eps = options.epsilon;
  const bool central = options.difference == Difference::Central;
  const int64_t begin = range.begin, end = range.stop(q);
  auto copies_of = [&](std::vector<double> scales, bool center = false) {
    return PerturbationPlan::queries_at(stream, step, q, begin, end, scales, center);
  };
  std::vector<PerturbationPlan> plans;
  switch (options.parallel) {
    case Parallelism::Dual:
      plans.push_back(central ? copies_of({eps, -eps}) : copies_of({eps}, range.center));
      break;
    case Parallelism::Queries:
      if (central) {
        plans.push_back(copies_of({eps}));
      } else if (range.center) {
        plans.push_back(PerturbationPlan::unperturbed(stream, step, q));
      }
      plans.push_back(copies_of({central ? -eps : eps}));
      break;
    case Parallelism::Sequential:
      if (!central && range.center) plans.push_back(PerturbationPlan::unperturbed(stream, step, q));
      for (double sign : central ? std::vector<double>{1.0, -1.0} : std::vector<double>{1.0}) {
        for (int64_t i = begin; i < end; ++i) {
          plans.push_back(PerturbationPlan::single_query(stream, step, q, i, sign * eps));
        }
      }
      break;
  }
  return plans;
}

torch::Tensor losses_on_device(const CausalLM& model, const torch::Tensor& input_ids,
                               const AnswerLayout& layout, const std::vector<MaterializedPlan>& plans) {
  std::vector<torch::Tensor> losses;
  for (const auto& plan : plans) {
    const int64_t copies = plan.plan->copies();
    const auto hidden = model.hidden_states(copies == 1 ? input_ids : input_ids.repeat({copies, 1}), &plan);
    losses.push_back(copy_losses(model, hidden, layout, copies));
  }
  return losses.size() == 1 ? losses.front() : torch::cat(losses);
}

torch::Tensor projected_grads_on_device(const torch::Tensor& losses, const EstimatorOptions& options) {
  const int64_t q = options.queries;
  const auto l = losses.to(torch::kFloat64);
  const auto g = options.difference == Difference::Central
                     ? (l.narrow(0, 0, q) - l.narrow(0, q, q)) / (2.0 * options.epsilon)
                     : (l.narrow(0, 1, q) - l.narrow(0, 0, 1)) / options.epsilon;
  // FZOO: divided by the (population) standard deviation of the N perturbed losses; a zero σ
  // (every query landed on the same loss) gives g = 0 instead of a division by zero.
  auto normalized = g;
  if (options.kind == EstimatorKind::Fzoo) {
    const auto sigma = l.narrow(0, 1, q).std(/*unbiased=*/false);
    normalized = torch::where(sigma > 0, g / sigma, torch::zeros_like(g));
  }
  return normalized.to(torch::kFloat32);
}

DeviceEstimate estimate_on_device(const CausalLM& model, const torch::Tensor& input_ids,
                                  const AnswerLayout& layout, const std::vector<MaterializedPlan>& plans,
                                  const EstimatorOptions& options) {
  DeviceEstimate out;
  out.losses = losses_on_device(model, input_ids, layout, plans);
  out.projected_grads = projected_grads_on_device(out.losses, options);
  return out;
}

PrgeEstimator::PrgeEstimator(EstimatorOptions options) : options_(std::move(options)) {
  options_.validate();
}

std::vector<ZoParameter> PrgeEstimator::parameters(CausalLM& model) const {
  auto params = model.adapter_parameters();
  if (params.empty()) {
    throw std::invalid_argument("the prge estimator needs LoRA-FA adapters (adapter.targets is empty)");
  }
  return params;
}

PointLosses PrgeEstimator::evaluate_share(CausalLM& model, const TokenBatch& batch, int64_t step,
                                           const PerturbationStream& stream, QueryRange range) {
  batch.validate();
  PointLosses out;
  for (const auto& plan : device_step_plans(options_, stream, step, range)) {
    const auto losses = evaluate_plan(model, batch, plan);
    out.losses.insert(out.losses.end(), losses.begin(), losses.end());
    out.forward_passes += 1;
    out.sequences += plan.copies() * batch.size();
  }
  return out;
}

}  // namespace prge

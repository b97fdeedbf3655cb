#include "prge/estimators/prge_estimator.h"

#include "prge/losses.h"

#include <cmath>
#include <stdexcept>

namespace prge {

std::vector<double> evaluate_plan(const LlamaModel& model, const TokenBatch& batch,
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
                                                const PerturbationStream& stream, int64_t step) {
  if (!runs_on_device(options)) throw std::invalid_argument("device_step_plans needs estimator.kind prge");
  const int64_t q = options.queries;
  const double eps = options.epsilon;
  const bool central = options.difference == Difference::Central;
  std::vector<PerturbationPlan> plans;
  switch (options.parallel) {
    case Parallelism::Dual:
      plans.push_back(central ? PerturbationPlan::central_dual(stream, step, q, eps)
                              : PerturbationPlan::forward_difference(stream, step, q, eps));
      break;
    case Parallelism::Queries:
      plans.push_back(central ? PerturbationPlan::one_sided(stream, step, q, eps)
                              : PerturbationPlan::unperturbed(stream, step, q));
      plans.push_back(PerturbationPlan::one_sided(stream, step, q, central ? -eps : eps));
      break;
    case Parallelism::Sequential:
      if (!central) plans.push_back(PerturbationPlan::unperturbed(stream, step, q));
      for (double sign : central ? std::vector<double>{1.0, -1.0} : std::vector<double>{1.0}) {
        for (int64_t i = 0; i < q; ++i) plans.push_back(PerturbationPlan::single_query(stream, step, q, i, sign * eps));
      }
      break;
  }
  return plans;
}

DeviceEstimate estimate_on_device(const LlamaModel& model, const torch::Tensor& input_ids,
                                  const AnswerLayout& layout, const std::vector<MaterializedPlan>& plans,
                                  const EstimatorOptions& options) {
  const int64_t q = options.queries;
  std::vector<torch::Tensor> losses;
  for (const auto& plan : plans) {
    const int64_t copies = plan.plan->copies();
    const auto hidden = model.hidden_states(copies == 1 ? input_ids : input_ids.repeat({copies, 1}), &plan);
    losses.push_back(copy_losses(model, hidden, layout, copies));
  }
  DeviceEstimate out;
  out.losses = losses.size() == 1 ? losses.front() : torch::cat(losses);
  const auto l = out.losses.to(torch::kFloat64);
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
  out.projected_grads = normalized.to(torch::kFloat32);
  return out;
}

PrgeEstimator::PrgeEstimator(EstimatorOptions options) : options_(std::move(options)) {
  options_.validate();
}

std::vector<ZoParameter> PrgeEstimator::parameters(LlamaModel& model) const {
  auto params = model.adapter_parameters();
  if (params.empty()) {
    throw std::invalid_argument("the prge estimator needs LoRA-FA adapters (adapter.targets is empty)");
  }
  return params;
}

ZoEstimate PrgeEstimator::estimate(LlamaModel& model, const TokenBatch& batch, int64_t step,
                                   const PerturbationStream& stream) {
  batch.validate();
  const int64_t q = options_.queries;
  const double eps = options_.epsilon;
  ZoEstimate out;
  out.step = step;
  auto run = [&](const PerturbationPlan& plan) {
    auto losses = evaluate_plan(model, batch, plan);
    out.forward_passes += 1;
    out.sequences += plan.copies() * batch.size();
    return losses;
  };
  const auto unperturbed = PerturbationPlan::unperturbed(stream, step, q);

  std::vector<double> first(q), second(q);  // central: L(θ+εz_i), L(θ−εz_i); forward: L(θ+εz_i)
  double center = 0.0;
  if (options_.difference == Difference::Central) {
    if (options_.parallel == Parallelism::Dual) {
      auto all = run(PerturbationPlan::central_dual(stream, step, q, eps));
      std::copy(all.begin(), all.begin() + q, first.begin());
      std::copy(all.begin() + q, all.end(), second.begin());
    } else if (options_.parallel == Parallelism::Queries) {
      first = run(PerturbationPlan::one_sided(stream, step, q, eps));
      second = run(PerturbationPlan::one_sided(stream, step, q, -eps));
    } else {
      for (int64_t i = 0; i < q; ++i) {
        first[i] = run(PerturbationPlan::single_query(stream, step, q, i, eps))[0];
        second[i] = run(PerturbationPlan::single_query(stream, step, q, i, -eps))[0];
      }
    }
    double sum = 0.0;
    for (int64_t i = 0; i < q; ++i) {
      out.projected_grads.push_back((first[i] - second[i]) / (2.0 * eps));
      sum += 0.5 * (first[i] + second[i]);
    }
    out.loss = sum / static_cast<double>(q);
    out.losses = first;
    out.losses.insert(out.losses.end(), second.begin(), second.end());
  } else {
    if (options_.parallel == Parallelism::Dual) {
      auto all = run(PerturbationPlan::forward_difference(stream, step, q, eps));
      center = all[0];
      std::copy(all.begin() + 1, all.end(), first.begin());
    } else {
      center = run(unperturbed)[0];
      if (options_.parallel == Parallelism::Queries) {
        first = run(PerturbationPlan::one_sided(stream, step, q, eps));
      } else {
        for (int64_t i = 0; i < q; ++i) {
          first[i] = run(PerturbationPlan::single_query(stream, step, q, i, eps))[0];
        }
      }
    }
    double sigma = 0.0;
    if (options_.kind == EstimatorKind::Fzoo) {
      double mean = 0.0;
      for (double v : first) mean += v / static_cast<double>(q);
      for (double v : first) sigma += (v - mean) * (v - mean) / static_cast<double>(q);
      sigma = std::sqrt(sigma);
    }
    for (int64_t i = 0; i < q; ++i) {
      const double g = (first[i] - center) / eps;
      out.projected_grads.push_back(options_.kind != EstimatorKind::Fzoo ? g : sigma > 0.0 ? g / sigma : 0.0);
    }
    out.loss = center;
    out.losses = {center};
    out.losses.insert(out.losses.end(), first.begin(), first.end());
  }
  return out;
}

}  // namespace prge

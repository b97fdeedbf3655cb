#include "prge/estimators/prge_estimator.h"

#include "prge/losses.h"

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

bool evaluates_in_one_forward(const EstimatorOptions& options) {
  return options.kind == EstimatorKind::Prge && options.parallel == Parallelism::Dual;
}

PerturbationPlan one_forward_plan(const EstimatorOptions& options, const PerturbationStream& stream,
                                  int64_t step) {
  if (!evaluates_in_one_forward(options)) {
    throw std::invalid_argument("one_forward_plan needs estimator.kind prge with parallel: dual");
  }
  return options.difference == Difference::Central
             ? PerturbationPlan::central_dual(stream, step, options.queries, options.epsilon)
             : PerturbationPlan::forward_difference(stream, step, options.queries, options.epsilon);
}

DeviceEstimate estimate_in_one_forward(const LlamaModel& model, const torch::Tensor& input_ids,
                                       const AnswerLayout& layout, const MaterializedPlan& plan,
                                       const EstimatorOptions& options) {
  const int64_t copies = plan.plan->copies(), q = options.queries;
  const auto hidden = model.hidden_states(input_ids.repeat({copies, 1}), &plan);
  DeviceEstimate out;
  out.losses = copy_losses(model, hidden, layout, copies);
  const auto losses = out.losses.to(torch::kFloat64);
  const auto g = options.difference == Difference::Central
                     ? (losses.narrow(0, 0, q) - losses.narrow(0, q, q)) / (2.0 * options.epsilon)
                     : (losses.narrow(0, 1, q) - losses.narrow(0, 0, 1)) / options.epsilon;
  out.projected_grads = g.to(torch::kFloat32);
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
    out.losses.insert(out.losses.end(), losses.begin(), losses.end());
    return losses;
  };
  const auto unperturbed = PerturbationPlan{&stream, step, q, {0}, {0.0}};

  std::vector<double> first(q), second(q);  // central: L(θ+εz_i), L(θ−εz_i); forward: L(θ+εz_i)
  double center = 0.0;
  if (options_.difference == Difference::Central) {
    if (options_.parallel == Parallelism::Dual) {
      auto all = run(PerturbationPlan::central_dual(stream, step, q, eps));
      std::copy(all.begin(), all.begin() + q, first.begin());
      std::copy(all.begin() + q, all.end(), second.begin());
    } else if (options_.parallel == Parallelism::Single) {
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
  } else {
    if (options_.parallel == Parallelism::Dual) {
      auto all = run(PerturbationPlan::forward_difference(stream, step, q, eps));
      center = all[0];
      std::copy(all.begin() + 1, all.end(), first.begin());
    } else {
      center = run(unperturbed)[0];
      if (options_.parallel == Parallelism::Single) {
        first = run(PerturbationPlan::one_sided(stream, step, q, eps));
      } else {
        for (int64_t i = 0; i < q; ++i) {
          first[i] = run(PerturbationPlan::single_query(stream, step, q, i, eps))[0];
        }
      }
    }
    for (int64_t i = 0; i < q; ++i) out.projected_grads.push_back((first[i] - center) / eps);
    out.loss = center;
  }
  return out;
}

}  // namespace prge

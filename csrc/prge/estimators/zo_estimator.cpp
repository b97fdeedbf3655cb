#include "prge/estimators/zo_estimator.h"

#include "prge/estimators/mezo_estimator.h"
#include "prge/estimators/prge_estimator.h"
#include "prge/io/shown_text.h"

#include <fmt/format.h>

#include <cmath>
#include <stdexcept>

namespace prge {

EstimatorKind parse_estimator_kind(const std::string& name) {
  if (name == "prge") return EstimatorKind::Prge;
  if (name == "fzoo") return EstimatorKind::Fzoo;
  if (name == "mezo") return EstimatorKind::Mezo;
  if (name == "first_order") return EstimatorKind::FirstOrder;
  throw std::invalid_argument(
      fmt::format("unknown estimator {} (allowed: prge, fzoo, mezo, first_order)", io::shown_value(name)));
}

Difference parse_difference(const std::string& name) {
  if (name == "central") return Difference::Central;
  if (name == "forward") return Difference::Forward;
  throw std::invalid_argument(fmt::format("unknown difference {} (allowed: central, forward)", io::shown_value(name)));
}

Parallelism parse_parallelism(const std::string& name) {
  if (name == "dual") return Parallelism::Dual;
  if (name == "queries" || name == "single") return Parallelism::Queries;
  if (name == "sequential" || name == "none") return Parallelism::Sequential;
  throw std::invalid_argument(
      fmt::format("unknown parallel mode {} (allowed: dual, queries, sequential)", io::shown_value(name)));
}

std::string deprecated_parallelism(const std::string& name) {
  if (name != "single" && name != "none") return "";
  const auto now = to_string(parse_parallelism(name));
  return fmt::format("parallel mode '{}' is now spelled '{}' (the old spelling will be removed)", name, now);
}

std::string to_string(EstimatorKind kind) {
  switch (kind) {
    case EstimatorKind::Prge: return "prge";
    case EstimatorKind::Fzoo: return "fzoo";
    case EstimatorKind::Mezo: return "mezo";
    default: return "first_order";
  }
}
std::string to_string(Difference d) { return d == Difference::Central ? "central" : "forward"; }
std::string to_string(Parallelism p) {
  return p == Parallelism::Dual ? "dual" : (p == Parallelism::Queries ? "queries" : "sequential");
}

void EstimatorOptions::validate() const {
  if (queries < 1) throw std::invalid_argument("estimator.queries must be >= 1");
  if (!(epsilon > 0.0)) throw std::invalid_argument("estimator.epsilon must be > 0");
  if (epsilon > kMaxEpsilon) {
    throw std::invalid_argument(fmt::format("estimator.epsilon must be <= {:g} (MeZO and P-RGE use 1e-3 to 1e-1)",
                                            kMaxEpsilon));
  }
  if (kind == EstimatorKind::Mezo && parallel != Parallelism::Sequential) {
    throw std::invalid_argument(
        "estimator.parallel must be 'sequential' for mezo: full-parameter MeZO evaluates one point per "
        "forward (each layer forms its weights' θ ± εz inside that forward; there are no adapter copies to batch)");
  }
  if (kind == EstimatorKind::Fzoo) {
    if (difference != Difference::Forward || distribution != NoiseDistribution::Rademacher) {
      throw std::invalid_argument("fzoo is a forward difference of Rademacher queries: estimator.difference "
                                  "must be forward and estimator.distribution rademacher (the defaults for fzoo)");
    }
    if (queries < 2) throw std::invalid_argument("fzoo needs estimator.queries >= 2 (σ of the N query losses)");
  }
}

void check_range(const EstimatorOptions& options, QueryRange range) {
  const int64_t q = options.queries;
  if (range.begin < 0 || range.stop(q) > q || range.size(q) < 1) {
    throw std::invalid_argument(
        fmt::format("query range [{}, {}) is not a non-empty part of the {} queries", range.begin, range.stop(q), q));
  }
}

int64_t point_count(const EstimatorOptions& options, QueryRange range) {
  const int64_t n = range.size(options.queries);
  return options.difference == Difference::Central ? 2 * n : n + (range.center ? 1 : 0);
}

ZoEstimate estimate_from_losses(const EstimatorOptions& options, int64_t step, const std::vector<double>& losses) {
  const int64_t q = options.queries;
  if (static_cast<int64_t>(losses.size()) != point_count(options)) {
    throw std::invalid_argument(fmt::format("{} losses for a step of {} points", losses.size(), point_count(options)));
  }
  ZoEstimate out;
  out.step = step;
  out.losses = losses;
  if (options.difference == Difference::Central) {
    double sum = 0.0;
    for (int64_t i = 0; i < q; ++i) {
      const double plus = losses[static_cast<size_t>(i)], minus = losses[static_cast<size_t>(q + i)];
      out.projected_grads.push_back((plus - minus) / (2.0 * options.epsilon));
      sum += 0.5 * (plus + minus);
    }
    out.loss = sum / static_cast<double>(q);
    return out;
  }
  const double center = losses[0];
  double sigma = 0.0;  // FZOO: the population standard deviation of the q perturbed losses
  if (options.kind == EstimatorKind::Fzoo) {
    double mean = 0.0;
    for (int64_t i = 1; i <= q; ++i) mean += losses[static_cast<size_t>(i)] / static_cast<double>(q);
    for (int64_t i = 1; i <= q; ++i) {
      const double d = losses[static_cast<size_t>(i)] - mean;
      sigma += d * d / static_cast<double>(q);
    }
    sigma = std::sqrt(sigma);
  }
  for (int64_t i = 1; i <= q; ++i) {
    const double g = (losses[static_cast<size_t>(i)] - center) / options.epsilon;
    // A zero σ (every query landed on the same loss) gives g = 0, not a division by zero.
    out.projected_grads.push_back(options.kind != EstimatorKind::Fzoo ? g : sigma > 0.0 ? g / sigma : 0.0);
  }
  out.loss = center;
  return out;
}

ZoEstimate ZoEstimator::estimate(CausalLM& model, const TokenBatch& batch, int64_t step,
                                 const PerturbationStream& stream) {
  const auto points = evaluate_share(model, batch, step, stream, QueryRange{});
  auto out = estimate_from_losses(options(), step, points.losses);
  out.forward_passes = points.forward_passes;
  out.sequences = points.sequences;
  return out;
}

std::unique_ptr<ZoEstimator> make_zo_estimator(const EstimatorOptions& options) {
  options.validate();
  switch (options.kind) {
    case EstimatorKind::Prge:
    case EstimatorKind::Fzoo: return std::make_unique<PrgeEstimator>(options);
    case EstimatorKind::Mezo: return std::make_unique<MezoEstimator>(options);
    default: throw std::invalid_argument("first_order is not a zeroth-order estimator");
  }
}

}  // namespace prge

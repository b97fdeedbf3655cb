#include "prge/estimators/zo_estimator.h"

#include "prge/estimators/mezo_estimator.h"
#include "prge/estimators/prge_estimator.h"

#include <fmt/format.h>

#include <stdexcept>

namespace prge {

EstimatorKind parse_estimator_kind(const std::string& name) {
  if (name == "prge") return EstimatorKind::Prge;
  if (name == "fzoo") return EstimatorKind::Fzoo;
  if (name == "mezo") return EstimatorKind::Mezo;
  if (name == "first_order") return EstimatorKind::FirstOrder;
  throw std::invalid_argument(
      fmt::format("unknown estimator '{}' (allowed: prge, fzoo, mezo, first_order)", name));
}

Difference parse_difference(const std::string& name) {
  if (name == "central") return Difference::Central;
  if (name == "forward") return Difference::Forward;
  throw std::invalid_argument(fmt::format("unknown difference '{}' (allowed: central, forward)", name));
}

Parallelism parse_parallelism(const std::string& name) {
  if (name == "dual") return Parallelism::Dual;
  if (name == "queries" || name == "single") return Parallelism::Queries;
  if (name == "sequential" || name == "none") return Parallelism::Sequential;
  throw std::invalid_argument(
      fmt::format("unknown parallel mode '{}' (allowed: dual, queries, sequential)", name));
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
  if (kind == EstimatorKind::Mezo && parallel != Parallelism::Sequential) {
    throw std::invalid_argument(
        "estimator.parallel must be 'sequential' for mezo: full-parameter MeZO perturbs the weights in "
        "place, one point at a time");
  }
  if (kind == EstimatorKind::Fzoo) {
    if (difference != Difference::Forward || distribution != NoiseDistribution::Rademacher) {
      throw std::invalid_argument("fzoo is a forward difference of Rademacher queries: estimator.difference "
                                  "must be forward and estimator.distribution rademacher (the defaults for fzoo)");
    }
    if (queries < 2) throw std::invalid_argument("fzoo needs estimator.queries >= 2 (σ of the N query losses)");
  }
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

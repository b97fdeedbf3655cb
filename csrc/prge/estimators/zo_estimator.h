#pragma once
// An estimator evaluates the loss at perturbed parameter points and returns the
// projected gradients g_i of RGE; it never touches the optimizer or any logging.
//   central:  g_i = (L(θ + ε z_i) − L(θ − ε z_i)) / 2ε
//   forward:  g_i = (L(θ + ε z_i) − L(θ)) / ε
//   fzoo:     forward with Rademacher z_i, divided by σ, the standard deviation of the N
//             perturbed losses L(θ + ε z_i) (FZOO, Dang et al. 2025: normalized ZO-SGD)
#include "prge/models/causal_lm.h"
#include "prge/perturbation.h"
#include "prge/token_batch.h"

#include <memory>
#include <string>
#include <vector>

namespace prge {

enum class EstimatorKind { Prge, Fzoo, Mezo, FirstOrder };
enum class Difference { Central, Forward };
// How the evaluated points share forwards (estimator.parallel):
//   dual:       every ±ε point of every query in one forward (P-RGE inner + outer loop);
//   queries:    the q queries batched, + and − (or θ and θ+εz) in two forwards (outer loop);
//   sequential: one forward per evaluated point (ZO LoRA-FA / MeZO style).
// The spellings before 0.3, single and none, are still read (see deprecated_parallelism).
enum class Parallelism { Dual, Queries, Sequential };

EstimatorKind parse_estimator_kind(const std::string& name);
Difference parse_difference(const std::string& name);
Parallelism parse_parallelism(const std::string& name);
// The deprecation message for an old spelling of a parallel mode, "" for a current one.
std::string deprecated_parallelism(const std::string& name);
std::string to_string(EstimatorKind kind);
std::string to_string(Difference difference);
std::string to_string(Parallelism parallel);

// Above it ε measures no gradient (the points lie ε standard deviations of z apart): rejected
// when the config is read.
constexpr double kMaxEpsilon = 10.0;

struct EstimatorOptions {
  EstimatorKind kind = EstimatorKind::Prge;
  int64_t queries = 1;
  double epsilon = 1e-2;
  Difference difference = Difference::Central;
  Parallelism parallel = Parallelism::Dual;
  NoiseDistribution distribution = NoiseDistribution::Gaussian;
  NoiseRng rng = NoiseRng::Auto;

  void validate() const;
};

// The queries [begin, end) of a step; end < 0: up to the last one. One process of a
// distributed run evaluates such a share (python/prge/distributed.py). center: whether the
// share evaluates θ too (forward differences; one share of a step does).
struct QueryRange {
  int64_t begin = 0;
  int64_t end = -1;
  bool center = true;
  int64_t stop(int64_t queries) const { return end < 0 ? queries : end; }
  int64_t size(int64_t queries) const { return stop(queries) - begin; }
};

// Every evaluated point of a step in one order (ZoEstimate::losses, StepResult::losses):
//   central: [θ+εz_0 .. θ+εz_{q-1}, θ−εz_0 .. θ−εz_{q-1}]    forward: [θ, θ+εz_0 .. θ+εz_{q-1}]
// A share of the queries lists its points the same way: [+z_b..+z_{e-1}, −z_b..−z_{e-1}] or
// [θ, +z_b..+z_{e-1}] ([+z_b..+z_{e-1}] without the center).
int64_t point_count(const EstimatorOptions& options, QueryRange range = {});

struct PointLosses {
  std::vector<double> losses;  // in the order above
  int64_t forward_passes = 0;  // batched forward calls made
  int64_t sequences = 0;       // sequences pushed through the model
};

struct ZoEstimate {
  int64_t step = 0;
  std::vector<double> projected_grads;  // g_i, one per query
  std::vector<double> losses;           // every evaluated point, in the order above
  double loss = 0.0;                    // estimate of L(θ) reported as the training loss
  int64_t forward_passes = 0;           // batched forward calls made
  int64_t sequences = 0;                // sequences pushed through the model
};

// The losses of every point (the order above) -> g_i and the reported loss; the same
// arithmetic whether one process evaluated them all or many processes a share each.
ZoEstimate estimate_from_losses(const EstimatorOptions& options, int64_t step, const std::vector<double>& losses);

class ZoEstimator {
 public:
  virtual ~ZoEstimator() = default;
  // The losses of the points of the queries in `range`; nothing is updated.
  virtual PointLosses evaluate_share(CausalLM& model, const TokenBatch& batch, int64_t step,
                                     const PerturbationStream& stream, QueryRange range) = 0;
  // Every point, then g: evaluate_share over all queries + estimate_from_losses.
  ZoEstimate estimate(CausalLM& model, const TokenBatch& batch, int64_t step,
                      const PerturbationStream& stream);
  // The tensors this estimator perturbs (and the optimizer updates).
  virtual std::vector<ZoParameter> parameters(CausalLM& model) const = 0;
  virtual const EstimatorOptions& options() const = 0;
};

std::unique_ptr<ZoEstimator> make_zo_estimator(const EstimatorOptions& options);
// estimator.queries, or a query range outside 0..queries, as an invalid_argument.
void check_range(const EstimatorOptions& options, QueryRange range);

}  // namespace prge

#pragma once
// An estimator evaluates the loss at perturbed parameter points and returns the
// projected gradients g_i of RGE; it never touches the optimizer or any logging.
//   central:  g_i = (L(θ + ε z_i) − L(θ − ε z_i)) / 2ε
//   forward:  g_i = (L(θ + ε z_i) − L(θ)) / ε
//   fzoo:     forward with Rademacher z_i, divided by σ, the standard deviation of the N
//             perturbed losses L(θ + ε z_i) (FZOO, Dang et al. 2025: normalized ZO-SGD)
#include "prge/models/llama.h"
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

struct EstimatorOptions {
  EstimatorKind kind = EstimatorKind::Prge;
  int64_t queries = 1;
  double epsilon = 1e-2;
  Difference difference = Difference::Central;
  Parallelism parallel = Parallelism::Dual;
  NoiseDistribution distribution = NoiseDistribution::Gaussian;
  NoiseRng rng = NoiseRng::Torch;

  void validate() const;
};

struct ZoEstimate {
  int64_t step = 0;
  std::vector<double> projected_grads;  // g_i, one per query
  std::vector<double> losses;           // every evaluated point: P-RGE in device_step_plans'
                                        // order, MeZO in evaluation order
  double loss = 0.0;                    // estimate of L(θ) reported as the training loss
  int64_t forward_passes = 0;           // batched forward calls made
  int64_t sequences = 0;                // sequences pushed through the model
};

class ZoEstimator {
 public:
  virtual ~ZoEstimator() = default;
  virtual ZoEstimate estimate(LlamaModel& model, const TokenBatch& batch, int64_t step,
                              const PerturbationStream& stream) = 0;
  // The tensors this estimator perturbs (and the optimizer updates).
  virtual std::vector<ZoParameter> parameters(LlamaModel& model) const = 0;
};

std::unique_ptr<ZoEstimator> make_zo_estimator(const EstimatorOptions& options);

}  // namespace prge

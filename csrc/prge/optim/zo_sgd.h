#pragma once
// ZO-SGD: θ ← θ − lr · (d + wd·θ), with d = (1/q) Σ_i g_i z_i regenerated from the seed
// (the RGE direction of Eq. (1)); optional heavy-ball momentum on d.
#include "prge/estimators/zo_estimator.h"
#include "prge/perturbation.h"

#include <map>

namespace prge {

struct OptimizerOptions {
  double lr = 1e-4;
  double momentum = 0.0;
  double weight_decay = 0.0;
  void validate() const;
};

class ZoSgd {
 public:
  explicit ZoSgd(OptimizerOptions options);
  void apply(const std::vector<ZoParameter>& params, const PerturbationStream& stream,
             const ZoEstimate& estimate);
  // value <- value - lr * (d + wd * value), heavy-ball momentum on d kept under `key`; d is a
  // float32 direction of value's shape (e.g. the flat adapter buffer's RGE direction).
  void update(int64_t key, const torch::Tensor& value, torch::Tensor direction);
  const OptimizerOptions& options() const { return options_; }

 private:
  OptimizerOptions options_;
  std::map<int64_t, torch::Tensor> momentum_;  // float32, only when momentum > 0
};

// Plain SGD with a given gradient (first-order reference path).
void sgd_update(const std::vector<ZoParameter>& params, const std::vector<torch::Tensor>& grads,
                const OptimizerOptions& options);

}  // namespace prge

#pragma once
// Full-parameter MeZO (Malladi et al., 2023): for each query, evaluate the loss at θ + εz
// and θ − εz (central) or θ + εz (forward); z is regenerated from the seed, never stored.
// Sequential forward passes of the unrepeated batch. Unlike MeZO's in-place perturb /
// restore, each layer's θ ± εz is formed inside the forward as a temporary
// (WeightPerturbation): the stored weights change only in the update, so with lr = 0 they
// stay bit-identical in any dtype, and each query saves two sweeps over every weight.
#include "prge/estimators/prge_estimator.h"
#include "prge/estimators/zo_estimator.h"

namespace prge {

class MezoEstimator final : public ZoEstimator {
 public:
  explicit MezoEstimator(EstimatorOptions options);
  PointLosses evaluate_share(CausalLM& model, const TokenBatch& batch, int64_t step,
                             const PerturbationStream& stream, QueryRange range) override;
  std::vector<ZoParameter> parameters(CausalLM& model) const override;
  const EstimatorOptions& options() const override { return options_; }

 private:
  EstimatorOptions options_;
};

// MeZO's step as device work alone, for the trainer to capture as a CUDA graph: true when every
// perturbed weight comes from one kernel reading the step key from device memory (counter RNG,
// CUDA build and device, the model's kernels on: CausalLM::kernels_apply).
bool mezo_runs_on_device(const CausalLM& model, const PerturbationStream& stream);

// The losses of one MeZO step in zo_estimator.h's order (central [+εz_0.., −εz_0..], forward
// [θ, +εz_0..]; [points] float32 on the device), one forward of input_ids ([b, T] on the device)
// per point, and g from them. step_key: [1] int64 on the device, counter_rng::step_key(seed,
// step), read by the kernels (a graph's own tensor when captured). No host sync.
DeviceEstimate mezo_estimate_on_device(const CausalLM& model, const torch::Tensor& input_ids,
                                       const AnswerLayout& layout, const PerturbationStream& stream,
                                       int64_t step, const torch::Tensor& step_key,
                                       const EstimatorOptions& options);

}  // namespace prge

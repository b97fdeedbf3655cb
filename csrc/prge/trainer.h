#pragma once
// Trainer: one ZO (or first-order reference) step at a time over a CausalLM with
// LoRA-FA adapters (or full-parameter MeZO). Data loading lives in Python; the step
// itself (forwards, estimate, update) runs here in torch::InferenceMode.
#include "prge/config.h"
#include "prge/estimators/prge_estimator.h"
#include "prge/estimators/zo_estimator.h"
#include "prge/losses.h"
#include "prge/models/causal_lm.h"
#include "prge/optim/optimizer.h"

#include <functional>
#include <memory>

namespace prge {

namespace cuda {
class StepGraphs;
}

struct StepResult {
  int64_t step = 0;
  double loss = 0.0;
  std::vector<double> projected_grads;
  std::vector<double> losses;
  int64_t forward_passes = 0;
  int64_t sequences = 0;
  double seconds = 0.0;
};

struct TrainerOptions {
  // The step as device work alone, no host sync until the losses are read: P-RGE's forwards
  // (one for dual) and the RGE direction over the flat adapter buffer; MeZO's forwards with
  // each perturbed weight and each weight's direction drawn by one kernel (counter RNG, CUDA
  // layer kernels); first order's forward, backward to every B and update (CUDA device). The
  // plain path estimates on the host and updates through per-matrix ATen ops; it stays as the
  // reference and where these do not apply.
  bool fused_step = true;
  // On CUDA with the counter RNG, capture that step as a CUDA graph per batch shape (T
  // rounded up to kGraphLengthMultiple) and replay it.
  bool cuda_graphs = true;
};

// Batches are right-padded to a multiple of this length on CUDA, so that few graph shapes
// serve a run; causal attention makes the padding invisible to the answer tokens.
constexpr int64_t kGraphLengthMultiple = 32;

class Trainer {
 public:
  Trainer(std::shared_ptr<CausalLM> model, EstimatorOptions estimator, OptimizerOptions optimizer,
          uint64_t seed, TrainerOptions options = {});
  ~Trainer();

  StepResult step(const TokenBatch& batch);
  // One step split in two halves for a distributed run (python/prge/distributed.py): the
  // losses of this process's share (its queries, on its slice of the batch; nothing
  // updated), then, from the losses of every point (zo_estimator.h's order) that all
  // processes gathered, the estimate and the update, which every process applies alike.
  // The same arithmetic as step() for the points a share evaluates.
  PointLosses evaluate_share(const TokenBatch& batch, QueryRange range);
  StepResult apply_losses(const std::vector<double>& losses);
  // Answer-token NLL per sequence, unperturbed (evaluation / option scoring).
  SequenceScores score(const TokenBatch& batch) const;
  // [N, C] log-probabilities of single-token candidates at each sequence's answer position.
  torch::Tensor answer_logprobs(const TokenBatch& batch, const torch::Tensor& candidates) const;

  int64_t step_count() const { return step_; }
  // Whether step() takes the fused one-forward path, and whether it replays CUDA graphs.
  bool uses_fused_step() const;
  bool uses_cuda_graphs() const;
  // The generator z is drawn from (estimator.rng resolved for the model's device).
  NoiseRng rng() const { return stream_.rng(); }
  // Which code runs a step, in words (logged by prge train, stored in summary.json).
  std::string step_path() const;
  // The same for a distributed run's steps (evaluate_share + apply_losses): MeZO's shares take
  // the estimator's path (its device step is a whole step).
  std::string share_path() const;
  int64_t cuda_graphs_captured() const;
  // Throws std::invalid_argument outside 0..kMaxStepCount.
  void set_step_count(int64_t step);
  std::shared_ptr<CausalLM> model_ptr() { return model_; }

  // The update of step step_count() from its projected gradients g ([q], as StepResult gave
  // them), exactly as step() applied it in a single process (the same kernels on the same
  // path), then the step count advanced: a run's weights rebuilt from the base model and every
  // step's g (MeZO's seed trick, Malladi et al. 2023, sec. 2: z regenerated from (seed, step)).
  // Full-parameter MeZO only (std::invalid_argument otherwise, or for g of the wrong length).
  void replay_step(const std::vector<double>& projected_grads);
  // A 64-bit fingerprint of the trained weights' bits (LoRA-FA B, or for MeZO every weight)
  // and of the optimizer's state (moments, accumulated direction, step counts), as 16 hex digits:
  // equal for bit-identical state, and, in practice, for nothing else (position-weighted
  // integer sums of their 16-bit words, exact on any device).
  std::string state_fingerprint() const;

  // LoRA-FA B (or, for MeZO, every weight), the optimizer's state and the step count;
  // atomic write. Loading restores all three.
  void save_checkpoint(const std::string& path) const;
  void load_checkpoint(const std::string& path);

 private:
  std::vector<ZoParameter> trained_parameters() const;
  // Throws when the model's adapters were attached again after this Trainer was made.
  void check_adapters_unchanged() const;
  bool mezo() const;  // full-parameter MeZO
  bool first_order() const;  // backpropagation to B (FO-SGD on LoRA-FA)
  StepResult fused_step(const TokenBatch& batch);
  // The device work of one fused step (estimate + update); no host sync.
  DeviceEstimate run_fused(const torch::Tensor& input_ids, const AnswerLayout& layout,
                           const std::vector<MaterializedPlan>& plans);
  // The update from projected gradients g ([q] float32, on the model's device); step_key: the
  // counter RNG's key on the device (a captured graph's own tensor), else computed here.
  void update_adapters(const torch::Tensor& g, torch::Tensor step_key = {});
  // MeZO's fused update: every weight by its own direction from g ([q] float32 on the device),
  // z drawn again in a kernel keyed by step_key.
  void update_weights_on_device(const torch::Tensor& g, const torch::Tensor& step_key);
  // The update from a host-side estimate (the flat adapter buffer, or MeZO's parameters).
  void apply_estimate(const ZoEstimate& estimate);
  // The batch as the device step takes it: on CUDA right-padded to kGraphLengthMultiple.
  TokenBatch shaped_for_device(const TokenBatch& batch) const;
  using DeviceWork = std::function<DeviceEstimate(const torch::Tensor& input_ids, const AnswerLayout& layout,
                                                  const std::vector<MaterializedPlan>& plans)>;
  // `work` over the plans, materialized on the device: replayed from `graphs` when given
  // (CUDA build), else run eagerly.
  DeviceEstimate on_device(const TokenBatch& shaped, const std::vector<PerturbationPlan>& plans,
                           cuda::StepGraphs* graphs, const DeviceWork& work);

  std::shared_ptr<CausalLM> model_;
  EstimatorOptions estimator_options_;
  std::unique_ptr<ZoEstimator> estimator_;  // null for first_order
  Optimizer optimizer_;
  PerturbationStream stream_;
  TrainerOptions options_;
  std::unique_ptr<cuda::StepGraphs> graphs_;  // CUDA builds only
  // evaluate_share's forwards: graphs of their own (their outputs are losses only, no update),
  // never replayed for a whole step of the same shape.
  std::unique_ptr<cuda::StepGraphs> share_graphs_;
  int64_t step_ = 0;
  int64_t adapter_generation_ = 0;  // the model's, when this Trainer was made
};

}  // namespace prge

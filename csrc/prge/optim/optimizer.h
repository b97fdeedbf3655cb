#pragma once
// One optimizer for the ZO and first-order paths: the transforms of transforms.h chained as
// optimizer.kind says, a learning-rate schedule with warm-up, and gradient accumulation over
// `accumulate` steps. State (moments, accumulated direction) is kept per key in the layout
// of the tensor it updates (for LoRA-FA: the flat adapter buffer) and saved with checkpoints.
#include "prge/estimators/zo_estimator.h"
#include "prge/perturbation.h"

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace prge {

enum class OptimizerKind { Sgd, Adam, Sign };
enum class LrSchedule { Constant, Linear, Cosine };
OptimizerKind parse_optimizer_kind(const std::string& name);
LrSchedule parse_lr_schedule(const std::string& name);
std::string to_string(OptimizerKind kind);
std::string to_string(LrSchedule schedule);

// The flat adapter buffer's state key ("optimizer.adapter_buffer.<slot>" in checkpoints);
// per-matrix keys are parameter indices >= 0 ("optimizer.param<i>.<slot>").
constexpr int64_t kAdapterBufferKey = -1;

// The largest step count a checkpoint may hold (trainer.step, optimizer.steps): far past any
// run, far below where a count + 1 or a schedule's arithmetic on it overflows.
constexpr int64_t kMaxStepCount = int64_t{1} << 48;

// A checkpoint's count tensor ('trainer.step', 'optimizer.steps'): `n` integers, each 0 to
// kMaxStepCount. Throws std::invalid_argument naming the tensor otherwise.
std::vector<int64_t> read_step_counts(const std::string& name, const torch::Tensor& tensor, int64_t n);

// Above these a config value is no setting anyone means (lr 1e40 overflows at the first
// update): rejected when the config is read.
constexpr double kMaxLearningRate = 10.0;
constexpr double kMaxWeightDecay = 10.0;

struct OptimizerOptions {
  OptimizerKind kind = OptimizerKind::Sgd;
  double lr = 1e-4;
  double momentum = 0.0;  // sgd: heavy ball; sign: sign of the momentum (signum)
  double beta1 = 0.9, beta2 = 0.999, adam_eps = 1e-8;
  double weight_decay = 0.0;
  LrSchedule schedule = LrSchedule::Constant;
  int64_t warmup_steps = 0;  // counted in updates, as the schedule is
  int64_t total_steps = 0;   // trainer steps of the run (run.steps); 0: no decay
  int64_t accumulate = 1;    // average the direction over this many steps per update
  // The updates a run of total_steps applies: one per `accumulate` steps.
  int64_t total_updates() const { return total_steps / accumulate; }
  void validate() const;
};

// lr · schedule at update t (0-based; with accumulation an update is every k-th step, and the
// schedule is defined over updates): linear warm-up from lr / warmup to lr over the first
// `warmup_steps` updates, then constant, or linear / cosine decay towards 0 over the remaining
// updates of total_updates(), so the last update of a linear schedule gets lr / (updates - warmup).
double scheduled_lr(const OptimizerOptions& options, int64_t t);

class Optimizer {
 public:
  explicit Optimizer(OptimizerOptions options);

  // Host side, once per trainer step before the device work: advances the step count and
  // writes this update's scalars (lr · schedule, Adam's bias corrections) into device
  // tensors. Returns whether this step applies an update (false while accumulating).
  bool begin_step(const torch::Device& device);
  // value <- value - lr_t · chain(d), with the state kept under `key`. d: float32 of value's
  // shape. With accumulation, d is added to the running sum and applied every k-th step.
  void update(int64_t key, const torch::Tensor& value, torch::Tensor direction);
  // Per-matrix update of ZO parameters from an estimate (MeZO; the plain P-RGE path).
  void apply(const std::vector<ZoParameter>& params, const PerturbationStream& stream,
             const ZoEstimate& estimate);

  // Whether update() depends on host control flow between steps (accumulation): such a step
  // cannot be replayed from one captured CUDA graph.
  bool needs_host_control() const { return options_.accumulate > 1; }
  const OptimizerOptions& options() const { return options_; }
  // The step's device scalars [3] float32 (-lr_t, 1 - β1^t, 1 - β2^t): one tensor for the whole
  // run, so that a captured CUDA graph reads each step's values (undefined before begin_step).
  const torch::Tensor& step_scalars() const { return scalars_; }

  // State as named tensors ("optimizer.<key>.<slot>", plus "optimizer.steps"), and back.
  std::map<std::string, torch::Tensor> state() const;
  // Throws std::invalid_argument naming the tensor when `tensors` is not a state this optimizer
  // can load: an "optimizer.*" name it does not write, slots without "optimizer.steps", counts
  // that are not read_step_counts' 2 or whose updates are not steps / accumulate, a slot this
  // optimizer does not keep (or Adam's moments unpaired), or a slot whose shape is not
  // `shape_of(key)` (nullopt: no such key). Nothing is changed.
  void check_state(const std::map<std::string, torch::Tensor>& tensors,
                   const std::function<std::optional<std::vector<int64_t>>(int64_t key)>& shape_of) const;
  // Loads a state check_state accepts (slots it lacks are left fresh).
  void load_state(const std::map<std::string, torch::Tensor>& tensors, const torch::Device& device);

 private:
  struct Slots {
    torch::Tensor m, v, accumulated;
  };
  OptimizerOptions options_;
  std::map<int64_t, Slots> slots_;
  int64_t steps_ = 0;    // trainer steps seen (begin_step calls)
  int64_t updates_ = 0;  // updates applied
  bool applying_ = true;
  torch::Tensor scalars_;  // device [3] float32: -lr_t, 1 - β1^t, 1 - β2^t (one tensor for the run)
};

}  // namespace prge

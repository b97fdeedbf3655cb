#pragma once
// Whole-step CUDA graphs for the fused P-RGE step (Trainer::fused_step). One graph per batch
// shape (b, T, answer capacity); all graphs share one memory pool since they replay one at a
// time. Per shape: the first step runs eagerly (warm-up: cuBLAS handles, allocator), the
// second is captured and replayed, every later one is replayed. Between replays only the
// static inputs change: token ids, the answer layout and the counter RNG's step key, copied
// into the graph's own tensors. Built only in a CUDA build (PRGE_WITH_CUDA).
#include "prge/estimators/prge_estimator.h"
#include "prge/losses.h"
#include "prge/perturbation_plan.h"
#include "prge/token_batch.h"

#include <ATen/cuda/CUDAGraph.h>

#include <functional>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

namespace prge::cuda {

class StepGraphs {
 public:
  using StepFn = std::function<DeviceEstimate(const torch::Tensor& input_ids, const AnswerLayout& layout,
                                              const std::vector<MaterializedPlan>& plans)>;

  // Runs one step of `plans` (their step only selects the key, given as step_key) on `batch`.
  // The returned tensors belong to the graph: read them before the next call.
  DeviceEstimate run(const TokenBatch& batch, const std::vector<PerturbationPlan>& plans, uint32_t step_key,
                     const torch::Device& device, const StepFn& step);

  int64_t captured() const;  // graphs captured so far

 private:
  struct Entry {
    std::vector<PerturbationPlan> plans;  // persistent: the materialized plans point at them
    torch::Tensor input_ids;
    AnswerLayout layout;
    torch::Tensor step_key;
    std::vector<MaterializedPlan> materialized;
    at::cuda::CUDAGraph graph;
    DeviceEstimate outputs;
    int64_t runs = 0;
  };
  // b, T, answer capacity, per plan: its copies, their queries and their scales' bits
  using Key = std::tuple<int64_t, int64_t, int64_t, std::vector<int64_t>>;
  std::map<Key, std::unique_ptr<Entry>> entries_;
  at::cuda::MempoolId_t pool_{0, 0};
};

}  // namespace prge::cuda

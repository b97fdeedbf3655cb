#include "prge/cuda/step_graphs.h"

#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/cuda.h>

#include <cstring>

namespace prge::cuda {
namespace {
int64_t next_power_of_two(int64_t n) {
  int64_t p = 1;
  while (p < n) p <<= 1;
  return p;
}
}  // namespace

int64_t StepGraphs::captured() const {
  int64_t n = 0;
  for (const auto& [key, entry] : entries_) n += entry->runs >= 2 ? 1 : 0;
  return n;
}

DeviceEstimate StepGraphs::run(const TokenBatch& batch, const std::vector<PerturbationPlan>& plans, uint32_t step_key,
                               const torch::Device& device, const StepFn& step) {
  const int64_t answers = (batch.targets != kIgnoreIndex).sum().item<int64_t>();
  const auto host_layout = AnswerLayout::from_targets(batch.targets, next_power_of_two(answers));
  const int64_t capacity = host_layout.capacity();
  // Per plan: its copies, their queries (a share of the queries is a graph of its own) and their
  // scales (a graph keeps the scales it was materialized with), the scales as their bits.
  std::vector<int64_t> plan_key;
  for (const auto& plan : plans) {
    plan_key.push_back(plan.copies());
    plan_key.insert(plan_key.end(), plan.copy_query.begin(), plan.copy_query.end());
    for (const double scale : plan.copy_scale) {
      int64_t bits = 0;
      std::memcpy(&bits, &scale, sizeof bits);
      plan_key.push_back(bits);
    }
  }
  const Key key{batch.size(), batch.input_ids.size(1), capacity, plan_key};
  auto& slot = entries_[key];
  if (!slot) {
    slot = std::make_unique<Entry>();
    slot->plans = plans;
    slot->input_ids = torch::empty_like(batch.input_ids, batch.input_ids.options().device(device));
    slot->layout = host_layout.to(device);
    slot->step_key = torch::zeros({1}, torch::TensorOptions().dtype(torch::kInt64).device(device));
    for (const auto& plan : slot->plans) {
      slot->materialized.push_back(MaterializedPlan::build(plan, device, slot->step_key));
    }
  }
  Entry& e = *slot;
  for (auto& plan : e.plans) plan.step = plans.front().step;  // host-side only (the kernels read step_key)
  e.input_ids.copy_(batch.input_ids);
  e.layout.positions.copy_(host_layout.positions);
  e.layout.tokens.copy_(host_layout.tokens);
  e.layout.weights.copy_(host_layout.weights);
  e.layout.answers = host_layout.answers;
  e.step_key.fill_(static_cast<int64_t>(step_key));
  if (e.runs++ == 0) return step(e.input_ids, e.layout, e.materialized);  // eager warm-up step
  if (e.runs == 2) {
    torch::cuda::synchronize();
    // cuBLAS keeps a workspace per (handle, stream): the capture stream's is allocated during
    // the capture, in the graph's pool. Freeing the cached ones first (as torch.compile's CUDA
    // graphs do) keeps the eager warm-up's workspace from being held beside it; eager work
    // that comes later allocates its own again.
    at::cuda::clearCublasWorkspaces();
    auto capture_stream = c10::cuda::getStreamFromPool();
    {
      c10::cuda::CUDAStreamGuard guard(capture_stream);
      // Thread-local capture: other threads' CUDA calls (NCCL's watchdog in a distributed run)
      // neither break the capture nor are refused while it runs.
      e.graph.capture_begin(pool_, cudaStreamCaptureModeThreadLocal);
      e.outputs = step(e.input_ids, e.layout, e.materialized);
      e.graph.capture_end();
    }
    if (pool_ == at::cuda::MempoolId_t{0, 0}) pool_ = e.graph.pool();
    torch::cuda::synchronize();
  }
  e.graph.replay();
  return e.outputs;
}

}  // namespace prge::cuda

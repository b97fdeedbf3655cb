#include "prge/losses.h"

#include <stdexcept>

namespace prge {

SequenceScores score_sequences(const LlamaModel& model, const torch::Tensor& hidden,
                               const torch::Tensor& targets) {
  const int64_t n = hidden.size(0), t = hidden.size(1);
  auto flat_targets = targets.to(hidden.device()).reshape({n * t});
  auto positions = (flat_targets != kIgnoreIndex).nonzero().squeeze(1);
  auto rows = hidden.reshape({n * t, hidden.size(2)}).index_select(0, positions);
  auto logits = model.project_to_vocab(rows);  // [M, V] float32
  auto nll = at::cross_entropy_loss(logits, flat_targets.index_select(0, positions), {},
                                    at::Reduction::None);
  auto sequence = positions.div(t, "floor");
  auto options = torch::TensorOptions().dtype(torch::kFloat32).device(hidden.device());
  auto nll_sum = torch::zeros({n}, options).index_add_(0, sequence, nll);
  auto count = torch::zeros({n}, options).index_add_(0, sequence, torch::ones_like(nll));
  return {nll_sum, count};
}

torch::Tensor answer_logprobs(const LlamaModel& model, const torch::Tensor& hidden,
                              const torch::Tensor& targets, const torch::Tensor& candidates) {
  const int64_t n = hidden.size(0), t = hidden.size(1);
  auto mask = targets.to(hidden.device()) != kIgnoreIndex;
  if (!(mask.sum(1) == 1).all().item<bool>()) {
    throw std::invalid_argument("answer_logprobs needs exactly one answer position per sequence");
  }
  auto positions = mask.reshape({n * t}).nonzero().squeeze(1);  // row-major: one per sequence, in order
  auto rows = hidden.reshape({n * t, hidden.size(2)}).index_select(0, positions);
  auto logprobs = at::log_softmax(model.project_to_vocab(rows), -1);
  return logprobs.index_select(1, candidates.to(hidden.device(), torch::kInt64));
}

torch::Tensor copy_losses(const SequenceScores& scores, int64_t copies) {
  return scores.mean_loss().view({copies, -1}).mean(1).to(torch::kCPU, torch::kFloat64);
}

}  // namespace prge

#include "prge/losses.h"

#include <stdexcept>

namespace prge {

SequenceScores score_sequences(const CausalLM& model, const torch::Tensor& hidden,
                               const torch::Tensor& targets, const WeightPerturbation* perturbation) {
  const int64_t n = hidden.size(0), t = hidden.size(1);
  auto flat_targets = targets.to(hidden.device()).reshape({n * t});
  auto positions = (flat_targets != kIgnoreIndex).nonzero().squeeze(1);
  auto rows = hidden.reshape({n * t, hidden.size(2)}).index_select(0, positions);
  auto logits = model.project_to_vocab(rows, perturbation);  // [M, V] float32
  auto nll = at::cross_entropy_loss(logits, flat_targets.index_select(0, positions), {},
                                    at::Reduction::None);
  auto sequence = positions.div(t, "floor");
  auto options = torch::TensorOptions().dtype(torch::kFloat32).device(hidden.device());
  auto nll_sum = torch::zeros({n}, options).index_add_(0, sequence, nll);
  auto count = torch::zeros({n}, options).index_add_(0, sequence, torch::ones_like(nll));
  return {nll_sum, count};
}

torch::Tensor answer_logprobs(const CausalLM& model, const torch::Tensor& hidden,
                              const torch::Tensor& targets, const torch::Tensor& candidates) {
  if (candidates.dim() != 1 || candidates.is_floating_point()) {
    throw std::invalid_argument("answer_logprobs: candidates are a 1-D tensor [C] of token ids");
  }
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

AnswerLayout AnswerLayout::from_targets(const torch::Tensor& targets, int64_t capacity) {
  auto host = targets.to(torch::kCPU, torch::kInt64).contiguous();
  const int64_t b = host.size(0), t = host.size(1);
  const auto* tgt = host.data_ptr<int64_t>();
  std::vector<int64_t> positions, tokens, sequence_of;
  std::vector<int64_t> count(static_cast<size_t>(b), 0);
  for (int64_t i = 0; i < b * t; ++i) {
    if (tgt[i] == kIgnoreIndex) continue;
    positions.push_back(i);
    tokens.push_back(tgt[i]);
    sequence_of.push_back(i / t);
    ++count[static_cast<size_t>(i / t)];
  }
  const auto answers = static_cast<int64_t>(positions.size());
  if (capacity == 0) capacity = answers;
  if (capacity < answers) {
    throw std::invalid_argument("answer layout capacity is smaller than the batch's answer count");
  }
  std::vector<float> weights;
  for (int64_t k = 0; k < answers; ++k) {
    const auto n = count[static_cast<size_t>(sequence_of[static_cast<size_t>(k)])];
    weights.push_back(static_cast<float>(1.0 / (static_cast<double>(n) * static_cast<double>(b))));
  }
  positions.resize(static_cast<size_t>(capacity), 0);
  tokens.resize(static_cast<size_t>(capacity), 0);
  weights.resize(static_cast<size_t>(capacity), 0.0f);
  AnswerLayout layout;
  layout.positions = torch::tensor(positions, torch::kInt64);
  layout.tokens = torch::tensor(tokens, torch::kInt64);
  layout.weights = torch::tensor(weights, torch::kFloat32);
  layout.answers = answers;
  return layout;
}

AnswerLayout AnswerLayout::to(const torch::Device& device) const {
  return {positions.to(device), tokens.to(device), weights.to(device), answers};
}

torch::Tensor copy_losses(const CausalLM& model, const torch::Tensor& hidden,
                          const AnswerLayout& layout, int64_t copies, const WeightPerturbation* perturbation) {
  const int64_t rows_per_copy = hidden.size(0) / copies * hidden.size(1);
  auto offsets = torch::arange(copies, layout.positions.options()).mul_(rows_per_copy).unsqueeze(1);
  auto rows = (offsets + layout.positions.unsqueeze(0)).reshape({-1});  // [copies * capacity]
  auto selected = hidden.reshape({-1, hidden.size(-1)}).index_select(0, rows);
  auto logits = model.project_to_vocab(selected, perturbation);  // [copies * capacity, V] float32
  auto nll = at::cross_entropy_loss(logits, layout.tokens.repeat({copies}), {}, at::Reduction::None);
  return nll.view({copies, -1}).mul(layout.weights.unsqueeze(0)).sum(1);
}

}  // namespace prge

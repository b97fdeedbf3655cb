#pragma once
// Losses in the MeZO prompt format: cross-entropy over the full vocabulary, counted on
// answer tokens only. Logits are formed only at answer positions.
#include "prge/models/llama.h"
#include "prge/token_batch.h"

namespace prge {

struct SequenceScores {
  torch::Tensor nll_sum;  // [N] float32: -sum log p(answer tokens)
  torch::Tensor count;    // [N] float32: answer tokens per sequence
  torch::Tensor mean_loss() const { return nll_sum / count; }
};

// hidden: [N, T, d]; targets: [N, T].
SequenceScores score_sequences(const LlamaModel& model, const torch::Tensor& hidden,
                               const torch::Tensor& targets);

// log p(candidate | prompt) at the one answer position of each sequence (targets marks
// it): [N, C] float32. One forward scores every single-token label word.
torch::Tensor answer_logprobs(const LlamaModel& model, const torch::Tensor& hidden,
                              const torch::Tensor& targets, const torch::Tensor& candidates);

// Mean answer-token loss of each copy: sequences are grouped [copies, b]; -> [copies] (cpu, fp64).
torch::Tensor copy_losses(const SequenceScores& scores, int64_t copies);

}  // namespace prge

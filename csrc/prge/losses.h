#pragma once
// Losses in the MeZO prompt format: cross-entropy over the full vocabulary, counted on
// answer tokens only. Logits are formed only at answer positions.
#include "prge/models/causal_lm.h"
#include "prge/token_batch.h"

namespace prge {

struct SequenceScores {
  torch::Tensor nll_sum;  // [N] float32: -sum log p(answer tokens)
  torch::Tensor count;    // [N] float32: answer tokens per sequence
  torch::Tensor mean_loss() const { return nll_sum / count; }
};

// hidden: [N, T, d]; targets: [N, T]. `perturbation`: MeZO's, for the lm_head too.
SequenceScores score_sequences(const CausalLM& model, const torch::Tensor& hidden,
                               const torch::Tensor& targets,
                               const WeightPerturbation* perturbation = nullptr);

// log p(candidate | prompt) at the one answer position of each sequence (targets marks
// it): [N, C] float32. One forward scores every single-token label word.
torch::Tensor answer_logprobs(const CausalLM& model, const torch::Tensor& hidden,
                              const torch::Tensor& targets, const torch::Tensor& candidates);

// Mean answer-token loss of each copy: sequences are grouped [copies, b]; -> [copies] (cpu, fp64).
torch::Tensor copy_losses(const SequenceScores& scores, int64_t copies);

// Where the answer tokens of a batch are, read once on the host from its targets, so that the
// per-copy losses need no data-dependent shapes on the device (no nonzero(), no host sync):
// the step can then be captured as a CUDA graph. Rows are padded to `capacity` with weight 0.
//   copy_loss[c] = sum_k weight_k * nll(hidden row c*b*T + position_k, token_k),
//   weight_k = 1 / (answer tokens of k's sequence * b)   (mean over sequences of the mean
//   answer-token loss, as copy_losses computes it)
struct AnswerLayout {
  torch::Tensor positions;  // [capacity] int64, flat b*T index of each answer row
  torch::Tensor tokens;     // [capacity] int64, the target token there
  torch::Tensor weights;    // [capacity] float32
  int64_t answers = 0;      // real rows (the rest is padding)

  // capacity 0: exactly the batch's answer count.
  static AnswerLayout from_targets(const torch::Tensor& targets, int64_t capacity = 0);
  AnswerLayout to(const torch::Device& device) const;
  int64_t capacity() const { return positions.size(0); }
};

// [copies] float32 on the device: the answer-token loss of each copy of a batch repeated
// `copies` times (hidden: [copies * b, T, d]). `perturbation`: MeZO's, for the lm_head too.
torch::Tensor copy_losses(const CausalLM& model, const torch::Tensor& hidden,
                          const AnswerLayout& layout, int64_t copies,
                          const WeightPerturbation* perturbation = nullptr);

}  // namespace prge

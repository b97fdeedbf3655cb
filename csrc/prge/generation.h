#pragma once
// Text generation with a KV cache on the native model: the prompts (left-padded, batched)
// run once through forward_cached, then one token a step for every sequence at once.
// Greedy when temperature is 0, else sampling from softmax(logits / temperature) restricted
// to the top_k tokens and the top_p probability mass, from a seeded generator. Before either,
// the logits processors transformers' generate() applies for repetition_penalty and
// no_repeat_ngram_size, over each sequence's own tokens (its prompt and new tokens, no padding).
#include "prge/models/causal_lm.h"

#include <cstdint>
#include <vector>

namespace prge {

struct GenerationOptions {
  int64_t max_new_tokens = 32;
  double temperature = 0.0;  // 0: greedy
  int64_t top_k = 0;         // 0: no limit
  double top_p = 1.0;
  uint64_t seed = 0;
  std::vector<int64_t> stop_tokens;  // a sequence ends at the first of these (not returned)
  int64_t pad_id = 0;
  // A token already in the sequence: its logit divided by this when positive, multiplied when
  // negative (Keskar et al. 2019, CTRL, eq. 3; transformers' RepetitionPenaltyLogitsProcessor). 1: none.
  double repetition_penalty = 1.0;
  // > 0: no n-gram of this size occurs twice (transformers' NoRepeatNGramLogitsProcessor). 0: none.
  int64_t no_repeat_ngram_size = 0;
  void validate() const;
};

// The new tokens of each prompt (without the prompt, without the stop token).
std::vector<std::vector<int64_t>> generate(const CausalLM& model,
                                           const std::vector<std::vector<int64_t>>& prompts,
                                           const GenerationOptions& options);

}  // namespace prge

#pragma once
#include <torch/torch.h>

namespace prge {

constexpr int64_t kIgnoreIndex = -100;

// A right-padded batch in the MeZO prompt format: targets[i, t] is the token that
// position t must predict (an answer token) or kIgnoreIndex (prompt, padding).
struct TokenBatch {
  torch::Tensor input_ids;  // [b, T] int64
  torch::Tensor targets;    // [b, T] int64

  void validate() const;
  int64_t size() const { return input_ids.size(0); }
  // The batch repeated `copies` times along dim 0 ([copies * b, T]), on `device`.
  TokenBatch repeated(int64_t copies, const torch::Device& device) const;
};

}  // namespace prge

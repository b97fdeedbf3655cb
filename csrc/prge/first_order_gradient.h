#pragma once
// First-order reference: the exact gradient of the answer-token loss w.r.t. LoRA-FA B
// by backpropagation (FO-SGD LoRA-FA baseline, and ground truth for RGE's expectation).
#include "prge/models/causal_lm.h"
#include "prge/token_batch.h"

namespace prge {

struct FirstOrderResult {
  double loss = 0.0;
  std::vector<torch::Tensor> grads;  // one per adapter B, float32
};

FirstOrderResult lora_fa_gradient(CausalLM& model, const TokenBatch& batch);

}  // namespace prge

#pragma once
// First-order reference: the exact gradient of the answer-token loss w.r.t. LoRA-FA B
// by backpropagation (FO-SGD LoRA-FA baseline, and ground truth for RGE's expectation).
#include "prge/losses.h"
#include "prge/models/causal_lm.h"
#include "prge/token_batch.h"

namespace prge {

struct FirstOrderResult {
  double loss = 0.0;
  std::vector<torch::Tensor> grads;  // one per adapter B, float32
};

FirstOrderResult lora_fa_gradient(CausalLM& model, const TokenBatch& batch);

// The same from device tensors alone, for the trainer to capture with the update in a CUDA graph
// (no host sync): input_ids [b, T] on the model's device, layout its AnswerLayout there. The loss
// ([1] float32: the mean over sequences of each one's mean answer-token loss, as copy_losses
// forms it) and every B's gradient in the flat adapter buffer's layout ([total] float32).
// Needs autograd: throws std::logic_error inside InferenceMode.
struct FirstOrderOnDevice {
  torch::Tensor loss;
  torch::Tensor flat_grad;
};
FirstOrderOnDevice lora_fa_gradient_on_device(CausalLM& model, const torch::Tensor& input_ids,
                                              const AnswerLayout& layout);

}  // namespace prge

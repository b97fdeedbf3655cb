#include "prge/first_order_gradient.h"

#include "prge/losses.h"

#include <stdexcept>

namespace prge {

FirstOrderResult lora_fa_gradient(CausalLM& model, const TokenBatch& batch) {
  batch.validate();
  if (c10::InferenceMode::is_enabled()) {
    throw std::logic_error("lora_fa_gradient needs autograd: call it outside InferenceMode");
  }
  torch::AutoGradMode autograd(true);
  auto params = model.adapter_parameters();
  if (params.empty()) throw std::invalid_argument("first_order needs LoRA-FA adapters");
  for (auto& p : params) p.value.requires_grad_(true);
  const auto device_batch = batch.repeated(1, model.device());
  auto hidden = model.hidden_states(device_batch.input_ids);
  auto loss = score_sequences(model, hidden, device_batch.targets).mean_loss().mean();
  std::vector<torch::Tensor> leaves;
  for (auto& p : params) leaves.push_back(p.value);
  auto grads = torch::autograd::grad({loss}, leaves);
  FirstOrderResult out;
  out.loss = loss.item<double>();
  for (auto& p : params) p.value.requires_grad_(false);
  for (auto& g : grads) out.grads.push_back(g.detach());
  return out;
}

FirstOrderOnDevice lora_fa_gradient_on_device(CausalLM& model, const torch::Tensor& input_ids,
                                              const AnswerLayout& layout) {
  if (c10::InferenceMode::is_enabled()) {
    throw std::logic_error("lora_fa_gradient_on_device needs autograd: call it outside InferenceMode");
  }
  torch::AutoGradMode autograd(true);
  auto params = model.adapter_parameters();
  if (params.empty()) throw std::invalid_argument("first_order needs LoRA-FA adapters");
  std::vector<torch::Tensor> leaves;
  for (auto& p : params) leaves.push_back(p.value.requires_grad_(true));
  auto loss = copy_losses(model, model.hidden_states(input_ids), layout, 1);  // [1]
  auto grads = torch::autograd::grad({loss.sum()}, leaves);
  for (auto& p : params) p.value.requires_grad_(false);
  std::vector<torch::Tensor> flat;
  for (auto& g : grads) flat.push_back(g.detach().to(torch::kFloat32).flatten());
  return {loss.detach(), torch::cat(flat)};
}

}  // namespace prge

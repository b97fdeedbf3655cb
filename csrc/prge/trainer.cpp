#include "prge/trainer.h"

#include "prge/estimators/first_order.h"
#include "prge/io/safetensors.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <chrono>
#include <stdexcept>

namespace prge {

Trainer::Trainer(std::shared_ptr<LlamaModel> model, EstimatorOptions estimator,
                 OptimizerOptions optimizer, uint64_t seed)
    : model_(std::move(model)),
      estimator_options_(estimator),
      optimizer_(optimizer),
      stream_(seed, estimator.distribution, estimator.rng) {
  if (estimator.kind != EstimatorKind::FirstOrder) estimator_ = make_zo_estimator(estimator);
  trained_parameters();  // fail now, not at the first step, if nothing can be trained
}

std::vector<ZoParameter> Trainer::trained_parameters() const {
  if (estimator_) return estimator_->parameters(*model_);
  auto params = model_->adapter_parameters();
  if (params.empty()) throw std::invalid_argument("first_order needs LoRA-FA adapters");
  return params;
}

StepResult Trainer::step(const TokenBatch& batch) {
  const auto start = std::chrono::steady_clock::now();
  StepResult result;
  result.step = step_;
  if (estimator_) {
    c10::InferenceMode guard;
    const auto estimate = estimator_->estimate(*model_, batch, step_, stream_);
    optimizer_.apply(estimator_->parameters(*model_), stream_, estimate);
    result.loss = estimate.loss;
    result.projected_grads = estimate.projected_grads;
    result.losses = estimate.losses;
    result.forward_passes = estimate.forward_passes;
    result.sequences = estimate.sequences;
  } else {
    auto fo = lora_fa_gradient(*model_, batch);
    {
      c10::InferenceMode guard;
      sgd_update(model_->adapter_parameters(), fo.grads, optimizer_.options());
    }
    result.loss = fo.loss;
    result.losses = {fo.loss};
    result.forward_passes = 1;
    result.sequences = batch.size();
  }
  if (model_->device().is_cuda()) torch::cuda::synchronize();
  result.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ++step_;
  return result;
}

SequenceScores Trainer::score(const TokenBatch& batch) const {
  batch.validate();
  c10::InferenceMode guard;
  const auto device_batch = batch.repeated(1, model_->device());
  auto hidden = model_->hidden_states(device_batch.input_ids);
  auto scores = score_sequences(*model_, hidden, device_batch.targets);
  return {scores.nll_sum.cpu(), scores.count.cpu()};
}

torch::Tensor Trainer::answer_logprobs(const TokenBatch& batch, const torch::Tensor& candidates) const {
  batch.validate();
  c10::InferenceMode guard;
  const auto device_batch = batch.repeated(1, model_->device());
  auto hidden = model_->hidden_states(device_batch.input_ids);
  return prge::answer_logprobs(*model_, hidden, device_batch.targets, candidates).cpu();
}

void Trainer::save_checkpoint(const std::string& path) const {
  io::TensorMap tensors;
  for (const auto& p : trained_parameters()) tensors[p.name] = p.value;
  io::save_safetensors(path, tensors,
                       {{"step", std::to_string(step_)},
                        {"estimator", to_string(estimator_options_.kind)},
                        {"seed", std::to_string(stream_.seed())}});
}

void Trainer::load_checkpoint(const std::string& path) {
  auto tensors = io::load_safetensors(path);
  c10::InferenceMode guard;
  for (auto& p : trained_parameters()) {
    auto it = tensors.find(p.name);
    if (it == tensors.end()) {
      throw std::runtime_error(fmt::format("{}: checkpoint has no tensor '{}'", path, p.name));
    }
    if (it->second.sizes() != p.value.sizes()) {
      throw std::runtime_error(fmt::format("{}: tensor '{}' has shape {}, the model expects {}", path,
                                           p.name, fmt::join(it->second.sizes(), "x"),
                                           fmt::join(p.value.sizes(), "x")));
    }
    p.value.copy_(it->second);
  }
}

}  // namespace prge

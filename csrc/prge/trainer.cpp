#include "prge/trainer.h"

#include "prge/counter_rng.h"
#include "prge/estimators/mezo_estimator.h"
#include "prge/first_order_gradient.h"
#include "prge/io/safetensors.h"

#ifdef PRGE_WITH_CUDA
#include "prge/cuda/step_graphs.h"
#else
namespace prge::cuda {
class StepGraphs {};  // CPU build: never constructed
}  // namespace prge::cuda
#endif

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <chrono>
#include <stdexcept>

namespace prge {

namespace {
// Right-pads a batch to a multiple of `multiple` tokens (pad id 0, ignored targets).
TokenBatch padded_to_multiple(const TokenBatch& batch, int64_t multiple) {
  const int64_t t = batch.input_ids.size(1);
  const int64_t padded = (t + multiple - 1) / multiple * multiple;
  if (padded == t) return batch;
  using torch::indexing::Slice;
  auto ids = torch::zeros({batch.size(), padded}, batch.input_ids.options());
  auto targets = torch::full({batch.size(), padded}, kIgnoreIndex, batch.targets.options());
  ids.index_put_({Slice(), Slice(0, t)}, batch.input_ids);
  targets.index_put_({Slice(), Slice(0, t)}, batch.targets);
  return {ids, targets};
}
// The fields a step reports from its estimate (timing is the caller's).
StepResult result_of(const ZoEstimate& estimate) {
  StepResult result;
  result.step = estimate.step;
  result.loss = estimate.loss;
  result.projected_grads = estimate.projected_grads;
  result.losses = estimate.losses;
  result.forward_passes = estimate.forward_passes;
  result.sequences = estimate.sequences;
  return result;
}
}  // namespace

TokenBatch Trainer::shaped_for_device(const TokenBatch& batch) const {
  return model_->device().is_cuda() ? padded_to_multiple(batch, kGraphLengthMultiple) : batch;
}

Trainer::Trainer(std::shared_ptr<CausalLM> model, EstimatorOptions estimator,
                 OptimizerOptions optimizer, uint64_t seed, TrainerOptions options)
    : model_(std::move(model)),
      estimator_options_(estimator),
      optimizer_(optimizer),
      stream_(seed, estimator.distribution,
              resolve_noise_rng(estimator.rng, model_->device(), estimator.kind != EstimatorKind::Mezo)),
      options_(options),
      adapter_generation_(model_->adapter_generation()) {
  if (estimator.kind == EstimatorKind::Mezo && model_->quantized()) {
    throw std::invalid_argument(
        "estimator.kind: mezo perturbs and updates every weight, and this model keeps its projection weights "
        "quantized (model.quantize int8 / int4, or a model loaded with its own quantized blocks): there is no dense "
        "weight to perturb. Train LoRA-FA adapters (estimator.kind: prge or fzoo) on the quantized base, or load it "
        "dense (model.quantize: none or dense)");
  }
  if (estimator.kind == EstimatorKind::Mezo && estimator.difference == Difference::Forward &&
      !model_->lora_a_folded().empty()) {
    // θ's own loss would take the folded GEMMs and θ + εz's (a perturbed W for the call) the plain
    // ones: the two round differently, and g = ΔL / ε scales that by 1 / ε.
    throw std::invalid_argument(
        "estimator.kind: mezo with a forward difference on a model with fold_lora_a on: the loss at θ and the "
        "losses at θ + εz would run different GEMMs and round differently, which g = ΔL / ε magnifies. Set "
        "model.fold_lora_a = False (or use a central difference)");
  }
  if (estimator.kind != EstimatorKind::FirstOrder) estimator_ = make_zo_estimator(estimator);
  trained_parameters();  // fail now, not at the first step, if nothing can be trained
#ifdef PRGE_WITH_CUDA
  if (uses_cuda_graphs()) {
    graphs_ = std::make_unique<cuda::StepGraphs>();
    share_graphs_ = std::make_unique<cuda::StepGraphs>();
  }
#endif
}

Trainer::~Trainer() = default;

void Trainer::check_adapters_unchanged() const {
  if (model_->adapter_generation() != adapter_generation_) {
    throw std::invalid_argument(
        "the model's adapters were attached again after this Trainer was made (or fold_lora_a moved them into new "
        "storage): its optimizer state and captured steps belong to the adapters it was made with. Make a new "
        "Trainer for the new adapters");
  }
}

bool Trainer::mezo() const { return estimator_options_.kind == EstimatorKind::Mezo; }

bool Trainer::first_order() const { return estimator_options_.kind == EstimatorKind::FirstOrder; }

bool Trainer::uses_fused_step() const {
  if (!options_.fused_step) return false;
  if (mezo()) return mezo_runs_on_device(*model_, stream_);
  if (first_order()) return model_->kernels_apply() && !model_->adapter_buffer().empty();
  return runs_on_device(estimator_options_) && !model_->adapter_buffer().empty();
}

bool Trainer::uses_cuda_graphs() const {
#ifdef PRGE_WITH_CUDA
  // First order draws no z: its graph does not depend on the generator.
  return uses_fused_step() && options_.cuda_graphs && !optimizer_.needs_host_control() &&
         (first_order() || use_cuda_kernels(model_->device(), stream_.rng()));
#else
  return false;
#endif
}

std::string Trainer::step_path() const {
  const auto rng = to_string(stream_.rng());
  if (uses_cuda_graphs()) return fmt::format("fused device step in CUDA graphs (rng {})", rng);
  if (uses_fused_step()) {
    std::string why = optimizer_.needs_host_control() ? "optimizer.accumulate > 1"
                      : !options_.cuda_graphs         ? "CUDA graphs off"
                      : model_->device().is_cuda()     ? "rng torch"
                                                       : "not a CUDA device";
    return fmt::format("fused device step, no CUDA graphs ({}; rng {})", why, rng);
  }
  return fmt::format("ATen step (rng {})", rng);
}

std::string Trainer::share_path() const {
  if (mezo() || !uses_fused_step()) return fmt::format("ATen step (rng {})", to_string(stream_.rng()));
  return step_path();
}

int64_t Trainer::cuda_graphs_captured() const {
#ifdef PRGE_WITH_CUDA
  return graphs_ ? graphs_->captured() + share_graphs_->captured() : 0;
#else
  return 0;
#endif
}

void Trainer::update_adapters(const torch::Tensor& g, torch::Tensor step_key) {
  const auto& buffer = model_->adapter_buffer();
  if (!uses_fused_step()) {
    optimizer_.update(kAdapterBufferKey, buffer.values(), buffer.direction_aten(stream_, step_, g));
    return;
  }
  if (!step_key.defined()) {
    step_key = torch::tensor({static_cast<int64_t>(counter_rng::step_key(stream_.seed(), step_))}, torch::kInt64)
                   .to(model_->device());
  }
  optimizer_.update(kAdapterBufferKey, buffer.values(), buffer.direction(stream_, step_, g, step_key));
}

void Trainer::apply_estimate(const ZoEstimate& estimate) {
  optimizer_.begin_step(model_->device());
  if (!mezo() && runs_on_device(estimator_options_) && !model_->adapter_buffer().empty()) {
    update_adapters(torch::tensor(estimate.projected_grads, torch::kFloat64).to(torch::kFloat32).to(model_->device()));
  } else {
    optimizer_.apply(estimator_->parameters(*model_), stream_, estimate);
  }
}

DeviceEstimate Trainer::on_device(const TokenBatch& shaped, const std::vector<PerturbationPlan>& plans,
                                  cuda::StepGraphs* graphs, const DeviceWork& work) {
  const auto& device = model_->device();
#ifdef PRGE_WITH_CUDA
  if (graphs) return graphs->run(shaped, plans, counter_rng::step_key(stream_.seed(), step_), device, work);
#else
  (void)graphs;  // CPU build: never a graph
#endif
  std::vector<MaterializedPlan> materialized;
  for (const auto& plan : plans) materialized.push_back(MaterializedPlan::build(plan, device));
  return work(shaped.input_ids.to(device), AnswerLayout::from_targets(shaped.targets).to(device), materialized);
}

PointLosses Trainer::evaluate_share(const TokenBatch& batch, QueryRange range) {
  check_adapters_unchanged();
  if (!estimator_) throw std::invalid_argument("a distributed step needs a zeroth-order estimator, not first_order");
  batch.validate();
  c10::InferenceMode guard;
  // MeZO's shares stay on the estimator's path (its device step is the whole step).
  if (!uses_fused_step() || mezo()) return estimator_->evaluate_share(*model_, batch, step_, stream_, range);
  const auto plans = device_step_plans(estimator_options_, stream_, step_, range);
  // The share's forwards only (captured on CUDA); the update after the gather runs eagerly.
  const auto losses = on_device(shaped_for_device(batch), plans, share_graphs_.get(),
                                [this](const torch::Tensor& ids, const AnswerLayout& layout,
                                       const std::vector<MaterializedPlan>& materialized) {
                                  return DeviceEstimate{losses_on_device(*model_, ids, layout, materialized), {}};
                                })
                          .losses.to(torch::kCPU, torch::kFloat64)
                          .contiguous();
  PointLosses out;
  out.losses.assign(losses.data_ptr<double>(), losses.data_ptr<double>() + losses.numel());
  out.forward_passes = static_cast<int64_t>(plans.size());
  for (const auto& plan : plans) out.sequences += plan.copies() * batch.size();
  return out;
}

StepResult Trainer::apply_losses(const std::vector<double>& losses) {
  check_adapters_unchanged();
  if (!estimator_) throw std::invalid_argument("a distributed step needs a zeroth-order estimator, not first_order");
  const auto start = std::chrono::steady_clock::now();
  const auto estimate = estimate_from_losses(estimator_options_, step_, losses);
  {
    c10::InferenceMode guard;
    apply_estimate(estimate);
  }
  if (model_->device().is_cuda()) torch::cuda::synchronize();
  auto result = result_of(estimate);  // no forwards: the caller counts its share's
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ++step_;
  return result;
}

DeviceEstimate Trainer::run_fused(const torch::Tensor& input_ids, const AnswerLayout& layout,
                                  const std::vector<MaterializedPlan>& plans) {
  const auto& step_key = plans.front().step_key;
  if (first_order()) {  // backpropagation (outside InferenceMode), then the update as for RGE's direction
    auto fo = lora_fa_gradient_on_device(*model_, input_ids, layout);
    c10::InferenceMode guard;
    optimizer_.update(kAdapterBufferKey, model_->adapter_buffer().values(), fo.flat_grad);
    return DeviceEstimate{fo.loss, torch::Tensor()};
  }
  if (mezo()) {  // every weight updated in place by its own direction, z drawn again in a kernel
    auto estimate = mezo_estimate_on_device(*model_, input_ids, layout, stream_, step_, step_key, estimator_options_);
    update_weights_on_device(estimate.projected_grads, step_key);
    return estimate;
  }
  auto estimate = estimate_on_device(*model_, input_ids, layout, plans, estimator_options_);
  update_adapters(estimate.projected_grads, step_key);
  return estimate;
}

void Trainer::update_weights_on_device(const torch::Tensor& g, const torch::Tensor& step_key) {
  for (const auto& p : trained_parameters()) {
    optimizer_.update(p.index, p.value, stream_.combine_on_device(p, g, step_key));
  }
}

void Trainer::replay_step(const std::vector<double>& projected_grads) {
  check_adapters_unchanged();
  if (!mezo()) throw std::invalid_argument("replaying a step's update is for full-parameter MeZO (estimator.kind: mezo)");
  if (static_cast<int64_t>(projected_grads.size()) != estimator_options_.queries) {
    throw std::invalid_argument(fmt::format("step {}: {} projected gradients to replay, estimator.queries is {}",
                                            step_ + 1, projected_grads.size(), estimator_options_.queries));
  }
  c10::InferenceMode guard;
  if (uses_fused_step()) {  // as run_fused: g as float32 on the device (StepResult's doubles hold it exactly)
    optimizer_.begin_step(model_->device());
    const auto g = torch::tensor(projected_grads, torch::kFloat64).to(torch::kFloat32).to(model_->device());
    const auto step_key = torch::tensor({static_cast<int64_t>(counter_rng::step_key(stream_.seed(), step_))},
                                        torch::kInt64)
                              .to(model_->device());
    update_weights_on_device(g, step_key);
  } else {  // as step(): the host estimate through the optimizer
    ZoEstimate estimate;
    estimate.step = step_;
    estimate.projected_grads = projected_grads;
    apply_estimate(estimate);
  }
  if (model_->device().is_cuda()) torch::cuda::synchronize();
  ++step_;
}

std::string Trainer::state_fingerprint() const {
  c10::InferenceMode guard;
  constexpr int64_t kChunk = int64_t{1} << 24;  // 16-bit words per chunk: the sum stays below 2^63
  uint64_t fingerprint = 0;
  auto add = [&](const torch::Tensor& tensor, uint64_t tag) {
    const auto words = tensor.contiguous().view({-1}).view(torch::kInt16);
    uint64_t sum = 0;
    for (int64_t start = 0; start < words.numel(); start += kChunk) {
      const auto part = words.slice(0, start, std::min(start + kChunk, words.numel())).to(torch::kInt64).bitwise_and(0xFFFF);
      const auto position = torch::arange(start, start + part.numel(), part.options()).remainder(65521).add_(1);
      sum += static_cast<uint64_t>(part.mul(position).sum().item<int64_t>());
    }
    fingerprint = fingerprint * 1000003u + sum + tag;
  };
  for (const auto& p : trained_parameters()) add(p.value, static_cast<uint64_t>(p.index));
  // the optimizer's moments, accumulated direction and step counts: replayed steps rebuild them too
  for (const auto& [name, tensor] : optimizer_.state()) {
    uint64_t tag = 14695981039346656037u;  // FNV-1a of the name: the same on every build, unlike std::hash
    for (const unsigned char c : name) tag = (tag ^ c) * 1099511628211u;
    add(tensor, tag);
  }
  return fmt::format("{:016x}", fingerprint);
}

StepResult Trainer::fused_step(const TokenBatch& batch) {
  const auto start = std::chrono::steady_clock::now();
  batch.validate();
  // First order backpropagates: no InferenceMode around it, and the graph's static inputs are
  // ordinary tensors (autograd refuses inference tensors).
  c10::InferenceMode guard(!first_order());
  optimizer_.begin_step(model_->device());
  // MeZO and first order: one unperturbed plan, which only carries the step key to the device.
  const auto plans = mezo() || first_order()
                         ? std::vector<PerturbationPlan>{PerturbationPlan::unperturbed(stream_, step_, 1)}
                         : device_step_plans(estimator_options_, stream_, step_);
  const auto estimate = on_device(shaped_for_device(batch), plans, graphs_.get(),
                                  [this](const torch::Tensor& ids, const AnswerLayout& layout,
                                         const std::vector<MaterializedPlan>& materialized) {
                                    return run_fused(ids, layout, materialized);
                                  });
  const auto losses = estimate.losses.to(torch::kCPU, torch::kFloat64).contiguous();
  const std::vector<double> loss_values(losses.data_ptr<double>(), losses.data_ptr<double>() + losses.numel());
  StepResult result;
  if (first_order()) {
    result.step = step_;
    result.loss = loss_values.front();
    result.losses = loss_values;
    result.forward_passes = 1;
    result.sequences = batch.size();
  } else {
    // The reported loss from the losses as every path computes it; g as the device applied it.
    result = result_of(estimate_from_losses(estimator_options_, step_, loss_values));
    const auto grads = estimate.projected_grads.to(torch::kCPU, torch::kFloat64).contiguous();
    result.projected_grads.assign(grads.data_ptr<double>(), grads.data_ptr<double>() + grads.numel());
    if (mezo()) {  // one forward per point, each over the batch once
      result.forward_passes = losses.numel();
      result.sequences = result.forward_passes * batch.size();
    } else {  // one forward per plan, each over its copies of the batch
      result.forward_passes = static_cast<int64_t>(plans.size());
      result.sequences = 0;
      for (const auto& plan : plans) result.sequences += plan.copies() * batch.size();
    }
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ++step_;
  return result;
}

std::vector<ZoParameter> Trainer::trained_parameters() const {
  if (estimator_) return estimator_->parameters(*model_);
  auto params = model_->adapter_parameters();
  if (params.empty()) throw std::invalid_argument("first_order needs LoRA-FA adapters");
  return params;
}

StepResult Trainer::step(const TokenBatch& batch) {
  check_adapters_unchanged();
  if (uses_fused_step()) return fused_step(batch);
  const auto start = std::chrono::steady_clock::now();
  StepResult result;
  result.step = step_;
  if (estimator_) {
    c10::InferenceMode guard;
    const auto estimate = estimator_->estimate(*model_, batch, step_, stream_);
    apply_estimate(estimate);
    result = result_of(estimate);
  } else {
    auto fo = lora_fa_gradient(*model_, batch);
    {
      c10::InferenceMode guard;
      // The gradients in the flat buffer's layout: the same optimizer (and state layout) as
      // the ZO paths.
      std::vector<torch::Tensor> flat;
      for (const auto& g : fo.grads) flat.push_back(g.to(torch::kFloat32).flatten());
      optimizer_.begin_step(model_->device());
      optimizer_.update(kAdapterBufferKey, model_->adapter_buffer().values(), torch::cat(flat));
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
  check_adapters_unchanged();
  io::TensorMap tensors;
  for (const auto& p : trained_parameters()) tensors[p.name] = p.value;
  for (const auto& [name, tensor] : optimizer_.state()) tensors[name] = tensor;
  tensors["trainer.step"] = torch::tensor({step_}, torch::kInt64);
  io::save_safetensors(path, tensors,
                       {{"step", std::to_string(step_)},
                        {"estimator", to_string(estimator_options_.kind)},
                        {"optimizer", to_string(optimizer_.options().kind)},
                        {"seed", std::to_string(stream_.seed())}});
}

void Trainer::set_step_count(int64_t step) {
  if (step < 0 || step > kMaxStepCount) {
    throw std::invalid_argument(fmt::format("step_count {}: a step count is 0 to {}", step, kMaxStepCount));
  }
  step_ = step;
}

void Trainer::load_checkpoint(const std::string& path) {
  check_adapters_unchanged();
  auto tensors = io::load_safetensors(path);
  c10::InferenceMode guard;
  // A NaN or inf saved by a diverged run or written by a damaged disk would train and
  // generate on silently (empty outputs, non-finite merged weights): named here, before any
  // tensor is taken.
  for (const auto& [name, tensor] : tensors) {
    if (!tensor.is_floating_point()) continue;
    const auto bad = tensor.numel() - torch::isfinite(tensor).sum().item<int64_t>();
    if (bad > 0) {
      throw std::runtime_error(fmt::format("{}: tensor '{}' holds {} non-finite value(s) (NaN or inf) of {}; the file "
                                           "is damaged or was saved by a diverged run",
                                           path, name, bad, tensor.numel()));
    }
  }
  // Everything is checked before anything is written: a file refused leaves the model and the
  // optimizer as they were.
  const auto params = trained_parameters();
  for (const auto& p : params) {
    auto it = tensors.find(p.name);
    if (it == tensors.end()) {
      throw std::runtime_error(fmt::format("{}: checkpoint has no tensor '{}'", path, p.name));
    }
    if (it->second.sizes() != p.value.sizes()) {
      throw std::runtime_error(fmt::format("{}: tensor '{}' has shape {}, the model expects {}", path,
                                           p.name, fmt::join(it->second.sizes(), "x"),
                                           fmt::join(p.value.sizes(), "x")));
    }
  }
  std::map<std::string, torch::Tensor> state;
  for (const auto& [name, tensor] : tensors) {
    if (name.rfind("optimizer.", 0) == 0) state[name] = tensor;
  }
  const auto& buffer = model_->adapter_buffer();
  try {
    optimizer_.check_state(state, [&](int64_t key) -> std::optional<std::vector<int64_t>> {
      if (key == kAdapterBufferKey) {
        if (buffer.empty()) return std::nullopt;
        return buffer.values().sizes().vec();
      }
      for (const auto& p : params) {
        if (p.index == key) return p.value.sizes().vec();
      }
      return std::nullopt;
    });
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(fmt::format("{}: {}", path, e.what()));
  }
  // The trainer's state becomes the file's: what the file lacks starts fresh (optimizer state
  // and, without 'trainer.step', the step count, which also picks each step's z seed).
  // save_checkpoint writes the trainer's step and the optimizer's counts together, always: one
  // without the other would pair one run's moments with another's step count.
  const auto saved = tensors.find("trainer.step");
  if (saved == tensors.end() && !state.empty()) {
    throw std::runtime_error(fmt::format("{}: optimizer state ('{}') without 'trainer.step'", path, state.begin()->first));
  }
  if (saved != tensors.end() && state.empty()) {
    throw std::runtime_error(fmt::format("{}: 'trainer.step' without the optimizer's 'optimizer.steps'", path));
  }
  int64_t step = 0;
  if (saved != tensors.end()) {
    try {
      step = read_step_counts(saved->first, saved->second, 1)[0];
    } catch (const std::invalid_argument& e) {
      throw std::runtime_error(fmt::format("{}: {}", path, e.what()));
    }
  }
  for (const auto& p : params) p.value.copy_(tensors.at(p.name));
  optimizer_.load_state(state, model_->device());
  step_ = step;
}

}  // namespace prge

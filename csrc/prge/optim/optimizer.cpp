#include "prge/optim/optimizer.h"

#include "prge/devices.h"
#include "prge/io/shown_text.h"
#include "prge/optim/transforms.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <stdexcept>

namespace prge {

OptimizerKind parse_optimizer_kind(const std::string& name) {
  if (name == "sgd") return OptimizerKind::Sgd;
  if (name == "adam") return OptimizerKind::Adam;
  if (name == "sign") return OptimizerKind::Sign;
  throw std::invalid_argument(fmt::format("unknown optimizer.kind {} (allowed: sgd, adam, sign)", io::shown_value(name)));
}

LrSchedule parse_lr_schedule(const std::string& name) {
  if (name == "constant") return LrSchedule::Constant;
  if (name == "linear") return LrSchedule::Linear;
  if (name == "cosine") return LrSchedule::Cosine;
  throw std::invalid_argument(
      fmt::format("unknown optimizer.schedule {} (allowed: constant, linear, cosine)", io::shown_value(name)));
}

std::string to_string(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::Sgd: return "sgd";
    case OptimizerKind::Adam: return "adam";
    case OptimizerKind::Sign: return "sign";
  }
  return "?";
}

std::string to_string(LrSchedule schedule) {
  switch (schedule) {
    case LrSchedule::Constant: return "constant";
    case LrSchedule::Linear: return "linear";
    case LrSchedule::Cosine: return "cosine";
  }
  return "?";
}

void OptimizerOptions::validate() const {
  if (!(lr >= 0.0)) throw std::invalid_argument("optimizer.lr must be >= 0");
  if (lr > kMaxLearningRate) {
    throw std::invalid_argument(fmt::format("optimizer.lr must be <= {:g}: a larger step throws the weights off the "
                                            "loss surface at the first update (ZO fine-tuning uses 1e-7 to 1e-2)",
                                            kMaxLearningRate));
  }
  if (!(momentum >= 0.0 && momentum < 1.0)) throw std::invalid_argument("optimizer.momentum must be in [0, 1)");
  if (kind == OptimizerKind::Adam && momentum > 0.0) {
    throw std::invalid_argument("optimizer.momentum applies to sgd and sign; adam uses optimizer.betas");
  }
  if (!(beta1 >= 0.0 && beta1 < 1.0 && beta2 >= 0.0 && beta2 < 1.0)) {
    throw std::invalid_argument("optimizer.betas must both be in [0, 1)");
  }
  if (!(adam_eps > 0.0)) throw std::invalid_argument("optimizer.eps must be > 0");
  if (!(weight_decay >= 0.0)) throw std::invalid_argument("optimizer.weight_decay must be >= 0");
  if (weight_decay > kMaxWeightDecay) {
    throw std::invalid_argument(fmt::format("optimizer.weight_decay must be <= {:g}", kMaxWeightDecay));
  }
  if (warmup_steps < 0) throw std::invalid_argument("optimizer.warmup_steps must be >= 0");
  if (accumulate < 1) throw std::invalid_argument("optimizer.accumulate must be >= 1");
  if (total_steps < 0) throw std::invalid_argument("optimizer total steps must be >= 0");
  // Over a known number of steps (the config reader checks these again at its own keys, naming
  // run.steps): an update applied at all, none left unapplied, a warm-up that ends.
  if (total_steps > 0 && total_steps % accumulate != 0) {
    throw std::invalid_argument(fmt::format("optimizer.accumulate {} does not divide the {} total steps: the last {} "
                                            "step(s) would be applied by no update",
                                            accumulate, total_steps, total_steps % accumulate));
  }
  if (total_steps > 0 && warmup_steps > total_updates()) {
    throw std::invalid_argument(fmt::format("optimizer.warmup_steps {} exceeds the {} updates of the total steps: the "
                                            "learning rate would never reach optimizer.lr",
                                            warmup_steps, total_updates()));
  }
}

double scheduled_lr(const OptimizerOptions& o, int64_t t) {
  if (t < o.warmup_steps) return o.lr * static_cast<double>(t + 1) / static_cast<double>(o.warmup_steps);
  const int64_t decay_steps = o.total_updates() - o.warmup_steps;
  if (o.schedule == LrSchedule::Constant || decay_steps <= 0) return o.lr;
  const double progress = std::min(1.0, static_cast<double>(t - o.warmup_steps) / static_cast<double>(decay_steps));
  if (o.schedule == LrSchedule::Linear) return o.lr * (1.0 - progress);
  return o.lr * 0.5 * (1.0 + std::cos(M_PI * progress));
}

namespace {
// The optimizer's tensors (step scalars, moments, accumulated direction) live for the whole run
// and are written in place by steps inside InferenceMode (the zeroth-order ones) and outside it
// (first order's device step, for autograd): always made as normal tensors, since an inference
// tensor cannot be written outside InferenceMode.
torch::Tensor state_zeros(at::IntArrayRef sizes, const torch::Device& device) {
  c10::InferenceMode normal_tensors(false);
  return torch::zeros(sizes, torch::TensorOptions().dtype(torch::kFloat32).device(device));
}

constexpr const char* kStepsName = "optimizer.steps";

// "optimizer.<owner>.<slot>" -> (key, slot); owner "adapter_buffer" or "param<i>", slot m / v /
// accumulated, as state() writes them. Throws std::invalid_argument for any other name.
std::pair<int64_t, std::string> parse_state_name(const std::string& name) {
  const auto bad = [&] {
    return std::invalid_argument(fmt::format(
        "tensor '{}' is not optimizer state prge writes (optimizer.adapter_buffer.<slot>, "
        "optimizer.param<i>.<slot>, slot m, v or accumulated; or {})", name, kStepsName));
  };
  const std::string prefix = "optimizer.";
  if (name.rfind(prefix, 0) != 0) throw bad();
  const auto rest = name.substr(prefix.size());
  const auto dot = rest.rfind('.');
  if (dot == std::string::npos) throw bad();
  const auto owner = rest.substr(0, dot), slot = rest.substr(dot + 1);
  if (slot != "m" && slot != "v" && slot != "accumulated") throw bad();
  if (owner == "adapter_buffer") return {kAdapterBufferKey, slot};
  const std::string param = "param";
  const auto digits = owner.substr(std::min(owner.size(), param.size()));
  if (owner.rfind(param, 0) != 0 || digits.empty() || digits.size() > 9 ||
      digits.find_first_not_of("0123456789") != std::string::npos) {
    throw bad();
  }
  return {std::stoll(digits), slot};
}
}  // namespace

std::vector<int64_t> read_step_counts(const std::string& name, const torch::Tensor& tensor, int64_t n) {
  if (tensor.is_floating_point() || tensor.is_complex() || tensor.scalar_type() == torch::kBool ||
      tensor.numel() != n) {
    throw std::invalid_argument(fmt::format("tensor '{}' must hold {} integer{}, it holds {} value(s) of {}", name, n,
                                            n == 1 ? "" : "s", tensor.numel(), c10::toString(tensor.scalar_type())));
  }
  const auto flat = tensor.to(torch::kCPU, torch::kInt64).contiguous();
  std::vector<int64_t> counts(flat.data_ptr<int64_t>(), flat.data_ptr<int64_t>() + n);
  for (const auto count : counts) {
    if (count < 0 || count > kMaxStepCount) {
      throw std::invalid_argument(
          n == 1 ? fmt::format("tensor '{}' is {}, not a step count (0 to {})", name, count, kMaxStepCount)
                 : fmt::format("tensor '{}' holds ({}); step counts are 0 to {}", name, fmt::join(counts, ", "),
                               kMaxStepCount));
    }
  }
  return counts;
}

Optimizer::Optimizer(OptimizerOptions options) : options_(options) { options_.validate(); }

bool Optimizer::begin_step(const torch::Device& device) {
  applying_ = (steps_ + 1) % options_.accumulate == 0;
  ++steps_;
  // Made once: captured CUDA graphs read lr_t at this tensor's address on every replay.
  if (!scalars_.defined() || !already_on(scalars_.device(), device)) {
    scalars_ = state_zeros({3}, device);
  }
  if (applying_) {
    const int64_t t = updates_ + 1;  // Adam's bias-correction count of this update
    const auto host = torch::tensor({static_cast<float>(-scheduled_lr(options_, updates_)),
                                     static_cast<float>(1.0 - std::pow(options_.beta1, static_cast<double>(t))),
                                     static_cast<float>(1.0 - std::pow(options_.beta2, static_cast<double>(t)))});
    scalars_.copy_(host);
    ++updates_;
  }
  return applying_;
}

void Optimizer::update(int64_t key, const torch::Tensor& value, torch::Tensor d) {
  if (!scalars_.defined()) {
    throw std::logic_error("Optimizer::update before begin_step");
  }
  auto& s = slots_[key];
  auto zeros = [&] { return state_zeros(value.sizes(), value.device()); };
  if (options_.accumulate > 1) {
    if (!s.accumulated.defined()) s.accumulated = zeros();
    s.accumulated.add_(d);
    if (!applying_) return;
    d = s.accumulated / static_cast<double>(options_.accumulate);
    s.accumulated.zero_();
  }
  optim::add_decayed_weights(d, value, options_.weight_decay);
  switch (options_.kind) {
    case OptimizerKind::Sgd:
      if (options_.momentum > 0.0) {
        if (!s.m.defined()) s.m = zeros();
        optim::trace(d, s.m, options_.momentum);
      }
      break;
    case OptimizerKind::Adam:
      if (!s.m.defined()) s.m = zeros(), s.v = zeros();
      optim::scale_by_adam(d, s.m, s.v, options_.beta1, options_.beta2, options_.adam_eps, scalars_[1],
                           scalars_[2]);
      break;
    case OptimizerKind::Sign:
      if (options_.momentum > 0.0) {
        if (!s.m.defined()) s.m = zeros();
        optim::trace(d, s.m, options_.momentum);
      }
      optim::scale_by_sign(d);
      break;
  }
  value.addcmul_(d, scalars_[0]);  // value += (-lr_t) · d, lr_t read on the device
}

void Optimizer::apply(const std::vector<ZoParameter>& params, const PerturbationStream& stream,
                      const ZoEstimate& estimate) {
  for (const auto& p : params) update(p.index, p.value, stream.combine(p, estimate.step, estimate.projected_grads));
}

std::map<std::string, torch::Tensor> Optimizer::state() const {
  std::map<std::string, torch::Tensor> out;
  auto name = [](int64_t key, const char* slot) {
    return fmt::format("optimizer.{}.{}", key == kAdapterBufferKey ? "adapter_buffer" : fmt::format("param{}", key), slot);
  };
  for (const auto& [key, s] : slots_) {
    if (s.m.defined()) out[name(key, "m")] = s.m;
    if (s.v.defined()) out[name(key, "v")] = s.v;
    if (s.accumulated.defined()) out[name(key, "accumulated")] = s.accumulated;
  }
  out[kStepsName] = torch::tensor({steps_, updates_}, torch::kInt64);
  return out;
}

void Optimizer::check_state(const std::map<std::string, torch::Tensor>& tensors,
                            const std::function<std::optional<std::vector<int64_t>>(int64_t key)>& shape_of) const {
  if (!tensors.empty() && !tensors.count(kStepsName)) {  // moments without their counts would be dropped
    throw std::invalid_argument(fmt::format("tensor '{}' comes without '{}' (the optimizer's step counts)",
                                            tensors.begin()->first, kStepsName));
  }
  for (const auto& [name, tensor] : tensors) {
    if (name == kStepsName) {
      const auto counts = read_step_counts(name, tensor, 2);
      const auto steps = counts[0], updates = counts[1];
      if (updates != steps / options_.accumulate) {  // an update closes every accumulate-th step
        throw std::invalid_argument(fmt::format("tensor '{}' holds ({}, {}): {} steps at accumulate {} make {} updates",
                                                name, steps, updates, steps, options_.accumulate,
                                                steps / options_.accumulate));
      }
      continue;
    }
    const auto [key, slot] = parse_state_name(name);
    // Only the slots this optimizer keeps (update()): state of another kind or setting would
    // load into nothing (Adam's v into SGD) or half (momentum's m into Adam, v left zero).
    const bool adam = options_.kind == OptimizerKind::Adam;
    const bool keeps = slot == "m" ? adam || options_.momentum > 0.0 : slot == "v" ? adam : options_.accumulate > 1;
    if (!keeps) {
      throw std::invalid_argument(fmt::format("tensor '{}' is state this optimizer ({}, momentum {}, accumulate {}) "
                                              "does not keep", name, to_string(options_.kind), options_.momentum,
                                              options_.accumulate));
    }
    if (adam && slot != "accumulated") {
      const auto pair = name.substr(0, name.size() - 1) + (slot == "m" ? "v" : "m");
      if (!tensors.count(pair)) {
        throw std::invalid_argument(fmt::format("tensor '{}' comes without '{}' (Adam keeps both moments)", name, pair));
      }
    }
    const auto shape = shape_of(key);
    if (!shape) {
      throw std::invalid_argument(fmt::format("tensor '{}' is state of a parameter this model does not train", name));
    }
    if (tensor.sizes().vec() != *shape) {
      throw std::invalid_argument(fmt::format("tensor '{}' has shape {}, the parameter it belongs to {}", name,
                                              fmt::join(tensor.sizes(), "x"), fmt::join(*shape, "x")));
    }
  }
}

void Optimizer::load_state(const std::map<std::string, torch::Tensor>& tensors, const torch::Device& device) {
  // Fresh state first, written in place (CUDA graphs captured before a load read these tensors
  // at their address): a checkpoint without optimizer state, or without one of the slots held
  // here, leaves it fresh (zero moments are a fresh optimizer's).
  for (auto& [key, s] : slots_) {
    for (auto* slot : {&s.m, &s.v, &s.accumulated}) {
      if (slot->defined()) slot->zero_();
    }
  }
  steps_ = updates_ = 0;
  auto counts = tensors.find(kStepsName);
  if (counts == tensors.end()) return;
  const auto c = read_step_counts(kStepsName, counts->second, 2);
  steps_ = c[0];
  updates_ = c[1];
  for (const auto& [name, tensor] : tensors) {
    if (name == kStepsName) continue;
    const auto [key, slot_name] = parse_state_name(name);
    auto& s = slots_[key];
    auto& target = slot_name == "m" ? s.m : slot_name == "v" ? s.v : s.accumulated;
    // Into the tensor already held, where there is one: CUDA graphs captured before a load read
    // the state at its address.
    if (!target.defined() || target.sizes() != tensor.sizes() || !already_on(target.device(), device)) {
      target = state_zeros(tensor.sizes(), device);
    }
    target.copy_(tensor);
  }
}

}  // namespace prge

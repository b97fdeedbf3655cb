#include "prge/optim/zo_sgd.h"

#include <stdexcept>

namespace prge {

void OptimizerOptions::validate() const {
  if (!(lr >= 0.0)) throw std::invalid_argument("optimizer.lr must be >= 0");
  if (!(momentum >= 0.0 && momentum < 1.0)) {
    throw std::invalid_argument("optimizer.momentum must be in [0, 1)");
  }
  if (!(weight_decay >= 0.0)) throw std::invalid_argument("optimizer.weight_decay must be >= 0");
}

ZoSgd::ZoSgd(OptimizerOptions options) : options_(options) { options_.validate(); }

void ZoSgd::apply(const std::vector<ZoParameter>& params, const PerturbationStream& stream,
                  const ZoEstimate& estimate) {
  for (const auto& p : params) update(p.index, p.value, stream.combine(p, estimate.step, estimate.projected_grads));
}

void ZoSgd::update(int64_t key, const torch::Tensor& value, torch::Tensor direction) {
  if (options_.weight_decay > 0.0) direction.add_(value.to(torch::kFloat32), options_.weight_decay);
  if (options_.momentum > 0.0) {
    auto& buffer = momentum_[key];
    if (!buffer.defined()) {
      buffer = direction;
    } else {
      buffer.mul_(options_.momentum).add_(direction);
    }
    direction = buffer;
  }
  value.sub_(direction, options_.lr);
}

void sgd_update(const std::vector<ZoParameter>& params, const std::vector<torch::Tensor>& grads,
                const OptimizerOptions& options) {
  for (size_t i = 0; i < params.size(); ++i) {
    auto g = grads[i].to(torch::kFloat32);
    if (options.weight_decay > 0.0) g = g + options.weight_decay * params[i].value.to(torch::kFloat32);
    params[i].value.sub_(g, options.lr);
  }
}

}  // namespace prge

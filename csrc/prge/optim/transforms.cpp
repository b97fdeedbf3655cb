#include "prge/optim/transforms.h"

namespace prge::optim {

void add_decayed_weights(torch::Tensor& d, const torch::Tensor& value, double weight_decay) {
  if (weight_decay > 0.0) d.add_(value.to(torch::kFloat32), weight_decay);
}

void trace(torch::Tensor& d, torch::Tensor& m, double momentum) {
  m.mul_(momentum).add_(d);
  d = m;
}

void scale_by_adam(torch::Tensor& d, torch::Tensor& m, torch::Tensor& v, double beta1, double beta2,
                   double eps, const torch::Tensor& c1, const torch::Tensor& c2) {
  m.mul_(beta1).add_(d, 1.0 - beta1);
  v.mul_(beta2).addcmul_(d, d, 1.0 - beta2);
  d = (m / c1).div_((v / c2).sqrt_().add_(eps));
}

void scale_by_sign(torch::Tensor& d) { d = d.sign(); }

}  // namespace prge::optim

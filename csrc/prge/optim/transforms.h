#pragma once
// The optimizer as a chain of small transforms over an estimated direction d (the RGE
// direction (1/q) Σ g_i z_i, or a backprop gradient), applied in this order:
//   add_decayed_weights -> one of {trace (heavy-ball momentum), scale_by_adam, scale_by_sign}
//   -> scale by -lr · schedule(t).
// Each transform is a function of d, the parameter and its own state tensors; every
// step-dependent scalar (lr · schedule, Adam's bias corrections) is read from a device tensor,
// so a captured CUDA graph replays the right update at every step.
#include <torch/torch.h>

namespace prge::optim {

// d += weight_decay · value (coupled weight decay, before the moments).
void add_decayed_weights(torch::Tensor& d, const torch::Tensor& value, double weight_decay);

// Heavy-ball momentum: m = μ m + d; d = m. m starts at zero.
void trace(torch::Tensor& d, torch::Tensor& m, double momentum);

// Adam: m = β1 m + (1-β1) d; v = β2 v + (1-β2) d²; d = (m / c1) / (sqrt(v / c2) + eps), with
// c1 = 1 - β1^t, c2 = 1 - β2^t passed as device scalars.
void scale_by_adam(torch::Tensor& d, torch::Tensor& m, torch::Tensor& v, double beta1, double beta2,
                   double eps, const torch::Tensor& c1, const torch::Tensor& c2);

// signSGD (ZO-SignSGD): d = sign(d) (a new tensor: d may be the momentum state itself).
void scale_by_sign(torch::Tensor& d);

}  // namespace prge::optim

#pragma once
// torch::Device's == tells "cuda" from "cuda:0", though a tensor made for the one lands on the
// other. Code that keeps a device tensor across steps and makes it anew when the device asked
// for differs must not compare with ==: a tensor made anew every step moves under a captured
// CUDA graph that read the old one (the paper protocol's ARC runs, session 15).
#include <torch/torch.h>

namespace prge {

// Whether a tensor held on `held` already sits where `asked` places tensors: same type, and
// the same index when `asked` names one ("cuda" is taken to mean the device already held).
inline bool already_on(const torch::Device& held, const torch::Device& asked) {
  return held.type() == asked.type() && (!asked.has_index() || held.index() == asked.index());
}

}  // namespace prge

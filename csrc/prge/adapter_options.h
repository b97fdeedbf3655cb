#pragma once
// LoRA settings in PEFT's terms (peft.LoraConfig): the scaling of a module is alpha / rank,
// or alpha / sqrt(rank) with use_rslora (Kalajdzievski 2023, rsLoRA); rank_pattern and
// alpha_pattern override rank and alpha for the modules whose Hugging Face name
// (model.layers.N.self_attn.q_proj) matches a key as PEFT matches it, `(.*\.)?(KEY)$`, the
// first matching key in order winning.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace prge {

// The projections of a Llama-layout layer, in adapter order: the default targets. A family
// that stores some of them fused (Phi-3's qkv_proj, gate_up_proj) adapts a fused projection
// when all its parts are targeted, or when it is named itself.
const std::vector<std::string>& projection_names();

struct AdapterOptions {
  int64_t rank = 16;
  double alpha = 32.0;
  std::vector<std::string> targets = projection_names();
  uint64_t init_seed = 0;
  // A PEFT LoRA adapter directory whose A and B replace the fresh ones (a run's starting
  // point); its LoRA settings must be these. Read by the Python side.
  std::string init_from;
  bool use_rslora = false;
  std::vector<std::pair<std::string, int64_t>> rank_pattern;
  std::vector<std::pair<std::string, double>> alpha_pattern;

  // The rank and scaling of the adapter on the module named `module` (Hugging Face name).
  int64_t rank_of(const std::string& module) const;
  double scaling_of(const std::string& module) const;
};

}  // namespace prge

#pragma once
// Rotary position embeddings (Su et al. 2021, RoFormer) and the context-extension variants a
// Hugging Face config.json names, in either of its two layouts:
//   transformers >= 5:  "rope_parameters": {"rope_type": ..., "rope_theta": ..., "factor": ...}
//   transformers 4:     "rope_theta": ..., "rope_scaling": {"type" | "rope_type": ..., "factor": ...}
// Every variant changes only the inverse frequencies inv_freq[i] (i < head_dim / 2) and a
// scale on cos / sin ("attention factor"); what each one computes is stated at its RopeType.
#include <torch/torch.h>
#include <yaml-cpp/yaml.h>

#include <string>
#include <vector>

namespace prge {

enum class RopeType {
  Default,   // inv_freq[i] = theta^(-2i/d)
  Linear,    // inv_freq / factor (position interpolation, Chen et al. 2023)
  Dynamic,   // NTK-aware: theta' = theta * (factor * L / max_pos - (factor - 1))^(d / (d - 2)) when
             // the forward's length L exceeds max_position_embeddings (else Default)
  Llama3,    // Llama 3.1: wavelengths beyond original_max / low_freq_factor divided by factor,
             // below original_max / high_freq_factor kept, a linear blend in between
  Yarn,      // YaRN (Peng et al. 2023): interpolation / extrapolation blended by a ramp over
             // [beta_fast, beta_slow] rotations; cos and sin scaled by the attention factor
  LongRope,  // LongRoPE (Phi-3): inv_freq / short_factor[i], or / long_factor[i] when L > original_max;
             // cos and sin scaled by the attention factor
};
std::string to_string(RopeType type);

struct RopeParameters {
  RopeType type = RopeType::Default;
  double theta = 10000.0;
  double factor = 1.0;
  int64_t max_position_embeddings = 0;           // dynamic: where scaling starts
  int64_t original_max_position_embeddings = 0;  // llama3, yarn, longrope
  double low_freq_factor = 1.0, high_freq_factor = 4.0;  // llama3
  double beta_fast = 32.0, beta_slow = 1.0;              // yarn
  bool truncate = true;                                  // yarn: integer correction range
  double attention_factor = 1.0;  // yarn, longrope: resolved from factor when the config omits it
  std::vector<double> short_factor, long_factor;  // longrope, head_dim / 2 each

  // Forwards longer than this use other frequencies than shorter ones (dynamic, longrope);
  // every other type: the largest int64.
  int64_t rescaled_beyond() const;
  bool operator==(const RopeParameters& other) const;
};

// What a family's config class does beyond the common reading: rope type names it renames
// (Phi-3: su, yarn -> longrope), and whether it rotates part of the head.
struct RopeOptions {
  std::vector<std::pair<std::string, std::string>> aliases;
  bool allow_partial_rotation = false;
  // > 0: the config class's own original_max_position_embeddings (Phi3Config: 4096), which
  // transformers puts above the one inside rope_parameters when config.json has none at top level.
  int64_t class_original_max_position_embeddings = 0;
};

// RoPE of one attention kind, read from the parsed config.json `config` (the file `path`,
// named in errors). `rotary_dim` is the width RoPE rotates (head_dim, or head_dim *
// partial_rotary_factor). `layer_type` selects one entry of a per-layer-type rope_parameters
// ({"full_attention": {...}, "sliding_attention": {...}}, as Gemma 3 writes); empty: the flat
// form. `default_theta` applies when the config names no theta; `max_position_embeddings` is
// the model's. Unknown rope types, keys no rope type reads, and partial rotation
// (partial_rotary_factor < 1, unless options allow it) throw std::runtime_error naming the
// file and the field.
RopeParameters read_rope_parameters(const YAML::Node& config, const std::string& path, int64_t rotary_dim,
                                    int64_t max_position_embeddings, double default_theta = 10000.0,
                                    const std::string& layer_type = "", const RopeOptions& options = {});

// inv_freq [head_dim / 2] float32 for a forward whose positions are all < seq_len, computed as
// transformers' modeling_rope_utils does (float32 tables, double scalars).
torch::Tensor rope_inverse_frequencies(const RopeParameters& rope, int64_t head_dim, int64_t seq_len,
                                       const torch::Device& device);

// cos and sign-folded sin tables in `dtype`, shaped positions.sizes() + [head_dim]: cos = [c, c],
// sin = [-s, s] with c, s = cos, sin(position * inv_freq) * attention_factor, so that
// x * cos + swap_halves(x) * sin is HF's x * cos + rotate_half(x) * sin. positions: any integer
// tensor on inv_freq's device (no host transfer: safe inside CUDA graph capture).
struct RopeTables {
  torch::Tensor cos, sin;
};
RopeTables rope_tables(const torch::Tensor& inv_freq, double attention_factor, const torch::Tensor& positions,
                       torch::ScalarType dtype);

}  // namespace prge

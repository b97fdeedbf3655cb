#include "prge/models/arch.h"

#include <fmt/format.h>

#include <cmath>
#include <stdexcept>

namespace prge {

void ArchSpec::validate() const {
  if (vocab_size <= 0 || hidden_size <= 0 || intermediate_size <= 0 || num_hidden_layers <= 0 ||
      num_attention_heads <= 0 || num_key_value_heads <= 0 || head_dim <= 0) {
    throw std::invalid_argument(fmt::format("{} config: every size must be positive", model_type));
  }
  if (num_attention_heads % num_key_value_heads != 0) {
    throw std::invalid_argument(fmt::format(
        "{} config: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})", model_type,
        num_attention_heads, num_key_value_heads));
  }
  if (rotary_dim() % 2 != 0 || rotary_dim() <= 0 || rotary_dim() > head_dim) {
    throw std::invalid_argument(fmt::format("{} config: the rotated width head_dim * partial_rotary_factor = {} must "
                                            "be even and within head_dim {}", model_type, rotary_dim(), head_dim));
  }
  if (ropes.empty()) throw std::invalid_argument("config: no RoPE");
  if (!layers.empty() && static_cast<int64_t>(layers.size()) != num_hidden_layers) {
    throw std::invalid_argument(fmt::format("{} config: {} layer types for {} layers", model_type, layers.size(),
                                            num_hidden_layers));
  }
  for (const auto& l : layers) {
    if (l.window < 0 || l.rope < 0 || l.rope >= static_cast<int64_t>(ropes.size())) {
      throw std::invalid_argument(fmt::format("{} config: a layer's window or RoPE set is out of range", model_type));
    }
  }
}

LayerAttention ArchSpec::attention(int64_t layer) const {
  return layers.empty() ? LayerAttention{} : layers.at(static_cast<size_t>(layer));
}

int64_t ArchSpec::rotary_dim() const { return static_cast<int64_t>(static_cast<double>(head_dim) * partial_rotary_factor); }

double ArchSpec::attention_scale() const {
  return 1.0 / std::sqrt(query_pre_attn_scalar > 0 ? query_pre_attn_scalar : static_cast<double>(head_dim));
}

int64_t ArchSpec::parameter_count() const {
  const int64_t d = hidden_size, kv = num_key_value_heads * head_dim, q = num_attention_heads * head_dim;
  int64_t per_layer = d * q + 2 * d * kv + q * d + 3 * d * intermediate_size + 2 * d;
  if (qkv_bias) per_layer += q + 2 * kv;
  if (o_bias) per_layer += d;
  if (mlp_bias) per_layer += 2 * intermediate_size + d;
  if (qk_norm) per_layer += 2 * head_dim;
  if (sandwich_norms) per_layer += 2 * d;
  return vocab_size * d * (tie_word_embeddings ? 1 : 2) + num_hidden_layers * per_layer + d;
}

bool ArchSpec::operator==(const ArchSpec& o) const {
  return model_type == o.model_type && vocab_size == o.vocab_size && hidden_size == o.hidden_size &&
         intermediate_size == o.intermediate_size && num_hidden_layers == o.num_hidden_layers &&
         num_attention_heads == o.num_attention_heads && num_key_value_heads == o.num_key_value_heads &&
         head_dim == o.head_dim && rms_norm_eps == o.rms_norm_eps &&
         max_position_embeddings == o.max_position_embeddings && tie_word_embeddings == o.tie_word_embeddings &&
         qkv_bias == o.qkv_bias && o_bias == o.o_bias && mlp_bias == o.mlp_bias && qk_norm == o.qk_norm &&
         sandwich_norms == o.sandwich_norms && scale_embeddings == o.scale_embeddings &&
         fused_checkpoint == o.fused_checkpoint && norm == o.norm && activation == o.activation &&
         query_pre_attn_scalar == o.query_pre_attn_scalar && final_logit_softcapping == o.final_logit_softcapping &&
         partial_rotary_factor == o.partial_rotary_factor && ropes == o.ropes && layers == o.layers;
}

std::vector<int64_t> ArchSpec::shape(Role role) const {
  const int64_t d = hidden_size, q = num_attention_heads * head_dim, kv = num_key_value_heads * head_dim,
                f = intermediate_size;
  switch (role) {
    case Role::AttnInNorm: case Role::MlpInNorm: case Role::AttnOutNorm: case Role::MlpOutNorm: return {d};
    case Role::Q: return {q, d};
    case Role::K: case Role::V: return {kv, d};
    case Role::QKV: return {q + 2 * kv, d};
    case Role::O: return {d, q};
    case Role::Gate: case Role::Up: return {f, d};
    case Role::GateUp: return {2 * f, d};
    case Role::Down: return {d, f};
    case Role::QBias: return {q};
    case Role::KBias: case Role::VBias: return {kv};
    case Role::OBias: case Role::DownBias: return {d};
    case Role::GateBias: case Role::UpBias: return {f};
    case Role::QNorm: case Role::KNorm: return {head_dim};
  }
  return {};
}

}  // namespace prge

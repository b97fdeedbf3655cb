#pragma once
// What makes one decoder-only transformer family differ from another, as data: the
// architecture spec a family reads from config.json, and its checkpoint-name table. One
// generic decoder (models/causal_lm.h) runs every spec; a family is a registry entry
// (models/families.cpp) with a config reader and a table, written as its difference from Llama.
#include "prge/models/rope.h"

#include <yaml-cpp/yaml.h>

#include <set>
#include <string>
#include <vector>

namespace prge {

// RMSNorm forms (Zhang & Sennrich 2019), statistics in float32:
//   Llama: w * (x * rsqrt(mean(x^2) + eps)).to(dtype)      (Llama, Mistral, Qwen, Phi-3)
//   Gemma: (x * rsqrt(mean(x^2) + eps) * (1 + w)).to(dtype) (Gemma 3: w stored as an offset)
enum class NormKind { Llama, Gemma };
// Gated MLP down(act(gate(x)) * up(x)): SwiGLU (silu) or GeGLU with the tanh approximation.
enum class Activation { Silu, GeluTanh };

// One layer's attention: window 0 is causal over every earlier key; window W lets a query at
// position i see keys j with 0 <= i - j < W (W keys, itself included). `rope` indexes
// ArchSpec::ropes.
struct LayerAttention {
  int64_t window = 0;
  int64_t rope = 0;
  bool operator==(const LayerAttention& o) const { return window == o.window && rope == o.rope; }
};

// Where a weight sits in a layer. The roles a family has, in its table's order, fix the order
// of full-parameter MeZO's parameter indices (part of every z's seed).
enum class Role {
  AttnInNorm,    // before attention (input_layernorm)
  Q, K, V,       // or one fused QKV (Phi-3's qkv_proj)
  QKV,
  O,
  MlpInNorm,     // before the MLP (Llama's post_attention_layernorm, Gemma's pre_feedforward_layernorm)
  Gate, Up,      // or one fused GateUp (Phi-3's gate_up_proj)
  GateUp,
  Down,
  QBias, KBias, VBias, OBias, GateBias, UpBias, DownBias,
  QNorm, KNorm,  // per head over head_dim, before RoPE (Qwen3, Gemma 3)
  AttnOutNorm,   // on the attention output (Gemma 3's post_attention_layernorm)
  MlpOutNorm,    // on the MLP output (Gemma 3's post_feedforward_layernorm)
};

struct WeightEntry {
  Role role;
  std::string name;  // Hugging Face name inside layer N, e.g. "self_attn.q_proj.weight"
};

// A family's checkpoint names: per layer (prefix "model.layers.N."), in MeZO's parameter
// order, and the projections LoRA-FA may target, in adapter order.
struct WeightTable {
  std::vector<WeightEntry> layer;
  std::vector<std::string> projections;  // adapter targets (PEFT's module names)
};

struct ArchSpec {
  std::string model_type = "llama";
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  double rms_norm_eps = 1e-5;
  int64_t max_position_embeddings = 2048;
  bool tie_word_embeddings = false;
  bool qkv_bias = false, o_bias = false, mlp_bias = false;
  bool qk_norm = false;
  bool sandwich_norms = false;   // norms on the attention and MLP outputs (Gemma 3)
  bool scale_embeddings = false; // x = E[ids] * sqrt(hidden_size), the factor rounded to the dtype (Gemma)
  bool fused_checkpoint = false; // q/k/v and gate/up stored (and adapted) as one tensor each (Phi-3)
  bool multimodal_wrapper = false; // text weights under language_model. (the gemma3 wrapper); vision weights skipped
  NormKind norm = NormKind::Llama;
  Activation activation = Activation::Silu;
  double query_pre_attn_scalar = 0;   // attention scale 1 / sqrt(this); 0: head_dim (Gemma sets it)
  double final_logit_softcapping = 0; // 0: none; c: logits = c * tanh(logits / c) (Gemma 3)
  double partial_rotary_factor = 1.0; // RoPE rotates the first head_dim * this dims (Phi-4-mini: 0.75)
  // > 0: generation recomputes the KV cache once, when the sequence reaches this length
  // (Phi3ForCausalLM with LongRoPE: original_max_position_embeddings + 1, where the long factors
  // take over, so that every key is rotated with them).
  int64_t recompute_cache_at_length = 0;
  std::vector<RopeParameters> ropes{RopeParameters{}};  // one per attention kind
  std::vector<LayerAttention> layers;                    // one per layer (empty: all full, rope 0)

  // Reads a Hugging Face config.json through the family registry (models/families.cpp):
  // every key is read, known to leave the forward unchanged, or refused by name.
  static ArchSpec from_json_file(const std::string& path);
  void validate() const;
  int64_t parameter_count() const;
  // The family's checkpoint-name table for this spec's flags.
  WeightTable weights() const;
  // Hugging Face's module name of layer `layer`'s projection (model.layers.3.self_attn.q_proj,
  // model.language_model.layers.3... under a multimodal wrapper); std::invalid_argument for a
  // projection the family does not have.
  std::string hf_module_name(int64_t layer, const std::string& projection) const;
  // A projection's weight shape {out_features, in_features} (the same in every layer; Phi-3's
  // qkv_proj: {q + 2 kv, hidden}); std::invalid_argument for a projection the family lacks.
  std::vector<int64_t> projection_shape(const std::string& projection) const;
  // The projections (weights().projections, in adapter order) that adapter.targets adapt: a
  // fused projection (Phi-3's qkv_proj, gate_up_proj) is named by itself or by all of its parts'
  // Llama names. std::invalid_argument naming an unknown target or a fused projection's parts
  // named in part.
  std::vector<std::string> adapter_targets(const std::vector<std::string>& targets) const;
  // Layer i's attention (full causal, rope 0, when `layers` is empty).
  LayerAttention attention(int64_t layer) const;
  int64_t rotary_dim() const;
  double attention_scale() const;
  std::vector<int64_t> shape(Role role) const;  // of a layer tensor in this spec
  bool operator==(const ArchSpec& o) const;

 private:
  WeightEntry projection_weight(const std::string& projection) const;  // its layer weight entry
};

// The families the registry knows, by model_type (llama, mistral, ministral, qwen2, qwen3,
// gemma3_text, gemma3, phi3).
std::vector<std::string> supported_model_types();

// config.json read key by key: each read marks its key; finish() refuses every key neither
// read nor in `without_effect` (bookkeeping, generation defaults, training-only dropout),
// naming file and key. Values of the wrong type name file and key too.
class ConfigJson {
 public:
  ConfigJson(YAML::Node node, std::string path);
  bool has(const std::string& key) const;
  template <typename T>
  T get(const std::string& key, T fallback);
  YAML::Node node(const std::string& key);  // marks the key read
  void accept(const std::vector<std::string>& keys);  // known, without effect on the forward
  void finish(const std::string& family) const;
  [[noreturn]] void fail(const std::string& key, const std::string& what) const;
  const std::string& path() const { return path_; }
  const YAML::Node& root() const { return root_; }

 private:
  YAML::Node root_;
  std::string path_;
  std::set<std::string> read_;
};

}  // namespace prge

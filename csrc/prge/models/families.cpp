// The model-family registry: model_type -> a config.json reader (written as a difference from
// Llama, as transformers' modular files write them) and a checkpoint-name table. Facts from
// transformers 5.24's configuration_*.py / modeling_*.py of each family.
//
// Add a family: one reader below (start from read_decoder, set what differs, read or accept
// every key its config class writes) and one row in registry().
#include "prge/io/json_file.h"
#include "prge/io/shown_text.h"
#include "prge/io/yaml_scalars.h"
#include "prge/models/arch.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <stdexcept>

namespace prge {
namespace {

// Keys of any config.json that change nothing prge computes: token ids (generation reads
// them), bookkeeping, generation defaults older transformers wrote into every config,
// initialisation, training-only dropout (zeroth-order forwards are inference forwards, as in
// MeZO), the attention implementation transformers chose (eager / sdpa / flash: one result),
// and auto_map: modeling code shipped with the model, which transformers runs only when told
// trust_remote_code=True; for a model_type it has, it loads its own class, which prge matches
// (the Python side notes the key).
const std::vector<std::string>& keys_without_effect() {
  static const std::vector<std::string> keys{
      "_name_or_path", "architectures", "transformers_version", "torch_dtype", "dtype", "bos_token_id",
      "eos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id", "use_cache", "initializer_range",
      "attention_dropout", "id2label", "label2id", "output_attentions", "output_hidden_states", "return_dict",
      "problem_type", "is_encoder_decoder", "is_decoder", "chunk_size_feed_forward", "add_cross_attention",
      "tie_encoder_decoder", "cross_attention_hidden_size", "torchscript", "use_bfloat16", "tf_legacy_loss",
      "pruned_heads", "finetuning_task", "tokenizer_class", "prefix", "task_specific_params", "bad_words_ids",
      "begin_suppress_tokens", "suppress_tokens", "diversity_penalty", "do_sample", "early_stopping",
      "encoder_no_repeat_ngram_size", "exponential_decay_length_penalty", "forced_bos_token_id",
      "forced_eos_token_id", "length_penalty", "max_length", "min_length", "no_repeat_ngram_size",
      "num_beam_groups", "num_beams", "num_return_sequences", "output_scores", "remove_invalid_values",
      "repetition_penalty", "return_dict_in_generate", "temperature", "top_k", "top_p", "typical_p",
      "model_type", "_attn_implementation_autoset", "_attn_implementation", "auto_map",
      "cache_implementation",  // which KV cache generate() builds (Gemma 3's "hybrid"): the same attention
      "unsloth_fixed", "unsloth_version",  // bookkeeping of Unsloth's re-uploads
      "is_llama_config", "transformers.js_config"};  // SmolLM2's: nanotron's marker, transformers.js' settings
  return keys;
}

// The sizes every family has, with the family's defaults for missing keys (0: required).
struct Defaults {
  int64_t vocab_size = 0, hidden_size = 0, intermediate_size = 0, num_hidden_layers = 0, num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // 0: num_attention_heads
  int64_t head_dim = 0;             // 0: hidden_size / num_attention_heads
  double rms_norm_eps = 1e-6;
  int64_t max_position_embeddings = 2048;
  bool tie_word_embeddings = false;
};

Defaults defaults(const std::function<void(Defaults&)>& set) {
  Defaults d;
  set(d);
  return d;
}

// tie_word_embeddings, refused when null: transformers 4 keeps None, which unties even where the
// family's default ties (Gemma), and transformers 5 refuses it; no reading of it is safe.
bool read_tie_word_embeddings(ConfigJson& c, bool fallback) {
  const auto node = c.node("tie_word_embeddings");
  if (node && node.IsNull()) {
    c.fail("tie_word_embeddings", "null: transformers 4 reads it as untied and transformers 5 refuses it; write true "
                                  "or false");
  }
  return c.get<bool>("tie_word_embeddings", fallback);
}

// A size no checkpoint reaches (2^24 layers, heads or hidden units; 2^31 vocabulary entries):
// refused by name before per-layer tables are built for it.
constexpr int64_t kLargestSize = int64_t{1} << 24, kLargestVocabulary = int64_t{1} << 31;

int64_t sized(ConfigJson& c, const char* key, int64_t fallback) {
  if (!c.has(key) && fallback == 0) throw std::runtime_error(fmt::format("{}: missing key '{}'", c.path(), key));
  const auto value = c.get<int64_t>(key, fallback);
  const auto largest = std::string(key) == "vocab_size" ? kLargestVocabulary : kLargestSize;
  if (value > largest) c.fail(key, fmt::format("{} is larger than any model's (at most {})", value, largest));
  return value;
}

ArchSpec read_decoder(ConfigJson& c, const std::string& model_type, const Defaults& d) {
  ArchSpec s;
  s.model_type = model_type;
  s.vocab_size = sized(c, "vocab_size", d.vocab_size);
  s.hidden_size = sized(c, "hidden_size", d.hidden_size);
  s.intermediate_size = sized(c, "intermediate_size", d.intermediate_size);
  s.num_hidden_layers = sized(c, "num_hidden_layers", d.num_hidden_layers);
  s.num_attention_heads = sized(c, "num_attention_heads", d.num_attention_heads);
  // Missing: the family's default; null: num_attention_heads, as every config class here but
  // Gemma 3's reads None (read_gemma3_text refuses it).
  const auto kv = c.node("num_key_value_heads");
  s.num_key_value_heads = kv && kv.IsNull() ? s.num_attention_heads
                                            : c.get<int64_t>("num_key_value_heads", d.num_key_value_heads
                                                                                        ? d.num_key_value_heads
                                                                                        : s.num_attention_heads);
  s.head_dim = c.get<int64_t>(
      "head_dim", d.head_dim ? d.head_dim : (s.num_attention_heads > 0 ? s.hidden_size / s.num_attention_heads : 0));
  for (const auto& [key, value] : {std::pair{"head_dim", s.head_dim}, {"num_key_value_heads", s.num_key_value_heads}}) {
    if (value > kLargestSize) c.fail(key, fmt::format("{} is larger than any model's (at most {})", value, kLargestSize));
  }
  const auto eps = c.node("rms_norm_eps");
  if (eps && eps.IsNull()) c.fail("rms_norm_eps", "null: transformers refuses it; write a number > 0, or leave the key out");
  s.rms_norm_eps = c.get<double>("rms_norm_eps", d.rms_norm_eps);
  if (!(s.rms_norm_eps > 0) || !std::isfinite(s.rms_norm_eps)) {
    c.fail("rms_norm_eps", fmt::format("{} is not a finite number > 0 (each norm divides by sqrt(mean(x^2) + eps))",
                                       s.rms_norm_eps));
  }
  s.max_position_embeddings = c.get<int64_t>("max_position_embeddings", d.max_position_embeddings);
  if (s.max_position_embeddings <= 0) {
    c.fail("max_position_embeddings", fmt::format("{} is not a number of positions > 0", s.max_position_embeddings));
  }
  s.tie_word_embeddings = read_tie_word_embeddings(c, d.tie_word_embeddings);
  return s;
}

void read_activation(ConfigJson& c, ArchSpec& s, const char* key, const std::string& fallback) {
  const auto act = c.get<std::string>(key, fallback);
  if (act == "silu" || act == "swish") {
    s.activation = Activation::Silu;
  } else if (act == "gelu_pytorch_tanh" || act == "gelu_new" || act == "gelu_fast") {
    s.activation = Activation::GeluTanh;
  } else {
    c.fail(key, fmt::format("activation {} is not supported (silu, gelu_pytorch_tanh)", io::shown_value(act)));
  }
}

// One RoPE set from the keys transformers reads for it (rope_parameters / rope_scaling,
// rope_theta, partial_rotary_factor, original_max_position_embeddings).
RopeParameters read_rope(ConfigJson& c, const ArchSpec& s, double default_theta, const std::string& layer_type = "",
                         const RopeOptions& options = {}) {
  c.accept({"rope_parameters", "rope_scaling", "rope_theta", "partial_rotary_factor",
            "original_max_position_embeddings"});
  return read_rope_parameters(c.root(), c.path(), s.rotary_dim(), s.max_position_embeddings, default_theta,
                              layer_type, options);
}

// layer_types as transformers validates it: one entry per layer, each full_attention or
// sliding_attention; empty when config.json has none.
std::vector<std::string> read_layer_types(ConfigJson& c, const ArchSpec& s) {
  std::vector<std::string> types;
  const auto node = c.node("layer_types");
  if (!node || node.IsNull()) return types;
  if (!node.IsSequence()) c.fail("layer_types", "expected a list with one attention type per layer");
  for (const auto& t : node) {
    const auto type = t.IsScalar() ? t.Scalar() : std::string("(not a string)");
    if (type != "full_attention" && type != "sliding_attention") {
      c.fail("layer_types", fmt::format("layer {}: attention type {} is not supported (full_attention, "
                                        "sliding_attention)", types.size(), io::shown_value(type)));
    }
    types.push_back(type);
  }
  if (static_cast<int64_t>(types.size()) != s.num_hidden_layers) {
    c.fail("layer_types", fmt::format("{} entries for num_hidden_layers {}", types.size(), s.num_hidden_layers));
  }
  return types;
}

// sliding_window in tokens: `fallback` when config.json has no such key, 0 (no window) when it
// is null; 0 or less given as a number is refused (transformers fails on it, or in the gemma3
// wrapper computes a mask without meaning).
int64_t read_sliding_window(ConfigJson& c, int64_t fallback) {
  const YAML::Node node = c.node("sliding_window");
  if (node && node.IsNull()) return 0;
  const int64_t window = c.get<int64_t>("sliding_window", fallback);
  if (node && window <= 0) {
    c.fail("sliding_window", fmt::format("{} is not a window (a number of tokens > 0, or null for none)", window));
  }
  return window;
}

// A layer_types entry sliding_attention where no window applies (`why`): transformers fails on it.
void refuse_sliding_layers_without_window(ConfigJson& c, const std::vector<std::string>& types, const char* why) {
  const auto sliding = std::find(types.begin(), types.end(), "sliding_attention");
  if (sliding != types.end()) {
    c.fail("layer_types", fmt::format("layer {} is sliding_attention and no window applies ({})",
                                      sliding - types.begin(), why));
  }
}

// Sliding windows of the Qwen families: only with use_sliding_window, only on the layers from
// max_window_layers on (or those layer_types names "sliding_attention").
void read_qwen_windows(ConfigJson& c, ArchSpec& s) {
  const bool use = c.get<bool>("use_sliding_window", false);
  const int64_t first = c.get<int64_t>("max_window_layers", 28);
  const auto types = read_layer_types(c, s);
  if (c.get<bool>("use_mrope", false)) c.fail("use_mrope", "multimodal RoPE is not supported");
  c.accept({"sliding_window"});
  // Without use_sliding_window transformers sets sliding_window to None; null: no window either.
  const int64_t window = use ? read_sliding_window(c, 4096) : 0;
  if (window == 0) {  // every layer full
    refuse_sliding_layers_without_window(c, types, use ? "sliding_window is null" : "use_sliding_window is false");
    return;
  }
  s.layers.assign(static_cast<size_t>(s.num_hidden_layers), LayerAttention{});
  for (int64_t i = 0; i < s.num_hidden_layers; ++i) {
    const bool sliding = types.empty() ? i >= first : types.at(static_cast<size_t>(i)) == "sliding_attention";
    if (sliding) s.layers[static_cast<size_t>(i)].window = window;
  }
}

// Sliding window on every layer when config.json gives one (Mistral, Phi-3).
void read_window_on_all_layers(ConfigJson& c, ArchSpec& s, int64_t fallback) {
  const int64_t window = read_sliding_window(c, fallback);
  if (window > 0) s.layers.assign(static_cast<size_t>(s.num_hidden_layers), LayerAttention{window, 0});
}

ArchSpec read_llama(ConfigJson& c) {
  auto s = read_decoder(c, "llama", {});
  s.qkv_bias = s.o_bias = c.get<bool>("attention_bias", false);
  s.mlp_bias = c.get<bool>("mlp_bias", false);
  read_activation(c, s, "hidden_act", "silu");
  c.accept({"pretraining_tp"});  // a sliced matmul with the same result; unused since transformers 5
  // SmolLM2's (nanotron) config writes rope_interleaved: false, transformers' rotation; true would
  // mean another pairing of the dimensions, which transformers does not read either.
  if (c.get<bool>("rope_interleaved", false)) {
    c.fail("rope_interleaved", "true: interleaved RoPE pairs is not what transformers' Llama computes (it ignores the key)");
  }
  s.ropes = {read_rope(c, s, 10000.0)};
  return s;
}

// Mistral, and Ministral (MinistralConfig: the same model with layer_types; without them every
// layer slides when sliding_window is set). transformers also loads a mistral config that has
// layer_types as ministral: the window only on the layers it names sliding_attention.
ArchSpec read_mistral(ConfigJson& c, const std::string& model_type) {
  auto s = read_decoder(c, model_type, defaults([](Defaults& d) { d.num_key_value_heads = 8; d.max_position_embeddings = 131072; }));
  read_activation(c, s, "hidden_act", "silu");
  c.accept({"attention_bias", "mlp_bias",  // MistralAttention / MinistralAttention have no biases
            "use_sliding_window"});       // not read by MistralConfig: the window follows sliding_window alone
  read_window_on_all_layers(c, s, 4096);
  if (const auto types = read_layer_types(c, s); !types.empty()) {
    if (s.layers.empty()) refuse_sliding_layers_without_window(c, types, "sliding_window is null");
    for (size_t i = 0; i < s.layers.size(); ++i) {
      if (types[i] == "full_attention") s.layers[i] = {};
    }
  }
  s.ropes = {read_rope(c, s, 10000.0)};
  return s;
}

ArchSpec read_qwen2(ConfigJson& c) {
  auto s = read_decoder(c, "qwen2", defaults([](Defaults& d) { d.num_key_value_heads = 32; d.max_position_embeddings = 32768; }));
  s.qkv_bias = true;  // q/k/v always biased, o_proj never (attention_bias is not read)
  c.accept({"attention_bias"});
  read_activation(c, s, "hidden_act", "silu");
  read_qwen_windows(c, s);
  s.ropes = {read_rope(c, s, 10000.0)};
  return s;
}

ArchSpec read_qwen3(ConfigJson& c) {
  auto s = read_decoder(c, "qwen3", defaults([](Defaults& d) { d.num_key_value_heads = 32; d.head_dim = 128; d.max_position_embeddings = 32768; }));
  s.qkv_bias = s.o_bias = c.get<bool>("attention_bias", false);
  s.qk_norm = true;
  read_activation(c, s, "hidden_act", "silu");
  read_qwen_windows(c, s);
  s.ropes = {read_rope(c, s, 10000.0)};
  return s;
}

// Gemma 3's two RoPE sets, full-attention layers first, as Gemma3TextConfig builds them:
// rope_parameters per layer type (a set it lacks is {rope_type: default}), the legacy
// rope_scaling merged into the full-attention set only (so a legacy "type" beside that set's
// rope_type is not read, as in transformers), rope_theta (default 1e6) and rope_local_base_freq
// (1e4) where a set names no theta, original_max_position_embeddings from inside a set or
// max_position_embeddings (a top-level one is not read).
std::vector<RopeParameters> read_gemma3_ropes(ConfigJson& c, const ArchSpec& s) {
  c.accept({"rope_parameters", "rope_scaling", "rope_theta", "rope_local_base_freq",
            "original_max_position_embeddings"});
  const YAML::Node& root = c.root();
  YAML::Node given = root["rope_parameters"];
  if (given && !given.IsNull() && !given.IsMap()) c.fail("rope_parameters", "expected a mapping");
  const char* kinds[] = {"full_attention", "sliding_attention"};
  if (given && given.IsMap()) {
    for (const auto& entry : given) {
      const auto key = entry.first.as<std::string>();
      if (key != kinds[0] && key != kinds[1]) {
        c.fail("rope_parameters", fmt::format("{} outside full_attention / sliding_attention: Gemma3TextConfig "
                                              "reads RoPE per layer type and would ignore it", io::shown_value(key)));
      }
    }
  }
  YAML::Node nested(YAML::NodeType::Map);
  for (const char* kind : kinds) {
    YAML::Node set(YAML::NodeType::Map);
    set["rope_type"] = "default";  // a set config.json does not give starts as transformers' default one
    if (given && given.IsMap() && given[kind] && !given[kind].IsNull()) set = YAML::Clone(given[kind]);
    if (!set.IsMap()) c.fail("rope_parameters", fmt::format("{}: expected a mapping", kind));
    if (std::string(kind) == "full_attention" && root["rope_scaling"] && !root["rope_scaling"].IsNull()) {
      if (!root["rope_scaling"].IsMap()) c.fail("rope_scaling", "expected a mapping");
      for (const auto& entry : root["rope_scaling"]) set[entry.first.as<std::string>()] = YAML::Clone(entry.second);
    }
    if (!set["rope_theta"] || set["rope_theta"].IsNull()) {
      const auto theta = std::string(kind) == "full_attention" ? c.get<double>("rope_theta", 1e6)
                                                               : c.get<double>("rope_local_base_freq", 1e4);
      set["rope_theta"] = theta;
    }
    if (set["truncate"] && set["truncate"].IsScalar() && set["truncate"].Tag() != "!" &&
        set["truncate"].Scalar() == "false") {  // a quoted "false" is refused as a string by the RoPE reader
      c.fail("rope_parameters", fmt::format("{}: truncate false is not supported: transformers 5.24 reads "
                                            "truncate from the outer rope_parameters for per-layer RoPE, so it "
                                            "would truncate", kind));
    }
    nested[kind] = set;
  }
  YAML::Node config(YAML::NodeType::Map);
  config["rope_parameters"] = nested;
  return {read_rope_parameters(config, c.path(), s.rotary_dim(), s.max_position_embeddings, 1e6, kinds[0]),
          read_rope_parameters(config, c.path(), s.rotary_dim(), s.max_position_embeddings, 1e4, kinds[1])};
}

// Gemma3TextConfig; `in_wrapper`: text_config of the multimodal wrapper, whose class applies no
// final_logit_softcapping (so its value is not read).
ArchSpec read_gemma3_text_model(ConfigJson& c, bool in_wrapper) {
  if (const auto kv = c.node("num_key_value_heads"); kv && kv.IsNull()) {
    c.fail("num_key_value_heads", "null: Gemma3TextConfig has no reading of it (transformers fails); write a number");
  }
  auto s = read_decoder(c, "gemma3_text",
                        defaults([](Defaults& d) { d.vocab_size = 262208; d.hidden_size = 2304; d.intermediate_size = 9216; d.num_hidden_layers = 26; d.num_attention_heads = 8; d.num_key_value_heads = 4; d.head_dim = 256; d.max_position_embeddings = 131072; d.tie_word_embeddings = true; }));
  s.norm = NormKind::Gemma;
  s.sandwich_norms = s.scale_embeddings = s.qk_norm = true;
  s.qkv_bias = s.o_bias = c.get<bool>("attention_bias", false);
  read_activation(c, s, "hidden_activation", "gelu_pytorch_tanh");
  c.accept({"hidden_act",                // Gemma3TextConfig reads hidden_activation
            "attn_logit_softcapping"});  // stored, not applied by transformers 5.24
  s.query_pre_attn_scalar = c.get<double>("query_pre_attn_scalar", 256.0);
  if (!(s.query_pre_attn_scalar > 0)) {  // attention scores are scaled by its inverse square root
    c.fail("query_pre_attn_scalar", fmt::format("{} is not a number > 0", s.query_pre_attn_scalar));
  }
  s.final_logit_softcapping = in_wrapper ? 0.0 : c.get<double>("final_logit_softcapping", 0.0);  // null: none
  if (in_wrapper) {
    c.accept({"final_logit_softcapping"});
  } else if (c.has("final_logit_softcapping") && !(s.final_logit_softcapping > 0)) {  // transformers: cap * tanh(x / cap)
    c.fail("final_logit_softcapping", fmt::format("{} is not a cap > 0 (null for none)", s.final_logit_softcapping));
  }
  if (c.get<bool>("use_bidirectional_attention", false)) {
    c.fail("use_bidirectional_attention", "bidirectional attention (EmbeddingGemma) is not supported");
  }
  const int64_t window = read_sliding_window(c, 4096);
  if (window == 0) c.fail("sliding_window", "null: Gemma 3's sliding layers need a window (transformers fails on it)");
  const auto types = read_layer_types(c, s);
  // Python's (i + 1) % pattern takes 6.0 as 6: a whole number written as a float is read so
  const double pattern_value = c.get<double>("sliding_window_pattern", 6.0);
  if (pattern_value != std::floor(pattern_value) || std::fabs(pattern_value) > 1e9) {
    c.fail("sliding_window_pattern", fmt::format("{} is not a whole number of layers", pattern_value));
  }
  const auto pattern = static_cast<int64_t>(pattern_value);
  c.accept({"_sliding_window_pattern"});  // written back by transformers, not read
  if (types.empty() && pattern <= 0) {  // every pattern-th layer is a full-attention one
    c.fail("sliding_window_pattern", fmt::format("{} is not a number of layers > 0", pattern));
  }
  s.ropes = read_gemma3_ropes(c, s);
  s.layers.assign(static_cast<size_t>(s.num_hidden_layers), LayerAttention{});
  for (int64_t i = 0; i < s.num_hidden_layers; ++i) {
    const bool sliding = types.empty() ? (i + 1) % pattern != 0 : types.at(static_cast<size_t>(i)) == "sliding_attention";
    if (sliding) s.layers[static_cast<size_t>(i)] = LayerAttention{window, 1};
  }
  return s;
}

ArchSpec read_gemma3_text(ConfigJson& c) { return read_gemma3_text_model(c, /*in_wrapper=*/false); }

ArchSpec read_phi3(ConfigJson& c) {
  auto s = read_decoder(c, "phi3", defaults([](Defaults& d) { d.max_position_embeddings = 4096; d.rms_norm_eps = 1e-5; }));
  s.fused_checkpoint = true;
  read_activation(c, s, "hidden_act", "silu");
  c.accept({"attention_bias", "resid_pdrop", "embd_pdrop"});  // no biases; dropout: training only
  // Keys Phi-4-mini's config.json carries for its own modeling code (auto_map), which
  // transformers' Phi3 does not read: accepted at the values that code reads as plain Phi-3.
  const auto no_op = [&](const char* key, auto plain) {
    const auto value = c.get<decltype(plain)>(key, plain);
    if (value != plain) {
      c.fail(key, fmt::format("{} is not supported (transformers' Phi3 ignores the key; the model's own code "
                              "reads it; prge accepts only {})", value, plain));
    }
  };
  no_op("full_attn_mod", 1.0);  // a number either way (1 or 1.0), as Python compares it
  no_op("interpolate_factor", 1.0);
  no_op("lm_head_bias", false);
  no_op("mlp_bias", false);
  read_window_on_all_layers(c, s, 0);
  const auto& root = c.root();
  auto prf = [&](const YAML::Node& n, const char* key) {
    try {
      return n && !n.IsNull() ? io::json_scalar_as<double>(n) : 1.0;
    } catch (const std::exception& e) {
      c.fail(key, e.what());
    }
  };
  s.partial_rotary_factor = prf(root["partial_rotary_factor"], "partial_rotary_factor");
  if (root["rope_parameters"] && root["rope_parameters"].IsMap() && root["rope_parameters"]["partial_rotary_factor"]) {
    s.partial_rotary_factor = prf(root["rope_parameters"]["partial_rotary_factor"],
                                  "rope_parameters: partial_rotary_factor");
  }
  RopeOptions options;
  options.aliases = {{"su", "longrope"}, {"yarn", "longrope"}};  // Phi3Config renames them
  options.allow_partial_rotation = true;
  options.class_original_max_position_embeddings = 4096;  // Phi3Config's, above the one inside rope_parameters
  s.ropes = {read_rope(c, s, 10000.0, "", options)};
  if (s.ropes[0].type != RopeType::Default && s.ropes[0].type != RopeType::LongRope) {
    c.fail(c.has("rope_parameters") ? "rope_parameters" : "rope_scaling", fmt::format("rope type '{}' is not one Phi-3 reads (default, longrope)",
                                          to_string(s.ropes[0].type)));
  }
  if (s.ropes[0].type == RopeType::LongRope) {  // Phi3ForCausalLM.prepare_inputs_for_generation
    s.recompute_cache_at_length = s.ropes[0].original_max_position_embeddings + 1;
  }
  return s;
}

// The multimodal Gemma 3 wrapper: its text model, with Gemma3TextConfig's defaults for every
// key text_config leaves out (released configs list only the non-default ones).
ArchSpec read_gemma3(ConfigJson& c) {
  if (!c.has("text_config")) c.fail("text_config", "missing (a gemma3 config holds its text model there)");
  ConfigJson text(c.node("text_config"), c.path() + ": text_config");
  auto s = read_gemma3_text_model(text, /*in_wrapper=*/true);
  text.finish("gemma3_text");
  // Gemma3ForConditionalGeneration ties lm_head by the wrapper's own key (Gemma3Config: true),
  // whatever text_config says (transformers 5.24: a wrapper tied with text_config false ties).
  s.tie_word_embeddings = read_tie_word_embeddings(c, true);
  // (read_gemma3_text_model) Gemma3ForConditionalGeneration, the class transformers loads for this
  // model_type, does not apply text_config's final_logit_softcapping (Gemma3ForCausalLM does).
  c.accept({"vision_config", "mm_tokens_per_image", "boi_token_index", "eoi_token_index", "image_token_index",
            "image_token_id", "boi_token_id", "eoi_token_id"});
  s.multimodal_wrapper = true;
  return s;
}

struct Family {
  std::function<ArchSpec(ConfigJson&)> read;
};

const std::map<std::string, Family>& registry() {
  static const std::map<std::string, Family> families{
      {"llama", {read_llama}},
      {"mistral", {[](ConfigJson& c) { return read_mistral(c, "mistral"); }}},
      {"ministral", {[](ConfigJson& c) { return read_mistral(c, "ministral"); }}},
      {"qwen2", {read_qwen2}},
      {"qwen3", {read_qwen3}},
      {"gemma3_text", {read_gemma3_text}},
      {"gemma3", {read_gemma3}},
      {"phi3", {read_phi3}},
  };
  return families;
}

// The supported family whose name shares the longest prefix (3 letters at least) with
// `model_type` (qwen2_moe -> qwen2), else llama: what a refusal suggests.
std::string nearest_family(const std::string& model_type) {
  std::string best = "llama";
  size_t longest = 2;
  for (const auto& [name, _] : registry()) {
    size_t n = 0;
    while (n < name.size() && n < model_type.size() && name[n] == model_type[n]) ++n;
    if (n > longest) longest = n, best = name;
  }
  return best;
}

}  // namespace

std::vector<std::string> supported_model_types() {
  std::vector<std::string> out;
  for (const auto& [name, _] : registry()) out.push_back(name);
  return out;
}

ConfigJson::ConfigJson(YAML::Node node, std::string path) : root_(std::move(node)), path_(std::move(path)) {
  if (!root_.IsMap()) throw std::runtime_error(fmt::format("{}: expected a JSON object", path_));
}

bool ConfigJson::has(const std::string& key) const {
  const YAML::Node& root = root_;
  return root[key] && !root[key].IsNull();
}

template <typename T>
T ConfigJson::get(const std::string& key, T fallback) {
  read_.insert(key);
  if (!has(key)) return fallback;
  const YAML::Node& root = root_;
  try {
    return io::json_scalar_as<T>(root[key]);
  } catch (const std::exception& e) {
    fail(key, e.what());
  }
}
template int64_t ConfigJson::get<int64_t>(const std::string&, int64_t);
template double ConfigJson::get<double>(const std::string&, double);
template bool ConfigJson::get<bool>(const std::string&, bool);
template std::string ConfigJson::get<std::string>(const std::string&, std::string);

YAML::Node ConfigJson::node(const std::string& key) {
  read_.insert(key);
  const YAML::Node& root = root_;
  return root[key];
}

void ConfigJson::accept(const std::vector<std::string>& keys) { read_.insert(keys.begin(), keys.end()); }

void ConfigJson::fail(const std::string& key, const std::string& what) const {
  throw std::runtime_error(fmt::format("{}: {}: {}", path_, key, what));
}

void ConfigJson::finish(const std::string& family) const {
  const auto& generic = keys_without_effect();
  for (const auto& entry : root_) {
    const auto key = entry.first.as<std::string>();
    if (read_.count(key) || std::find(generic.begin(), generic.end(), key) != generic.end()) continue;
    if (key == "quantization_config") {
      throw std::runtime_error(fmt::format("{}: quantization_config: quantized Hugging Face checkpoints are not "
                                           "supported (load a dense checkpoint or a GGUF file)", path_));
    }
    throw std::runtime_error(fmt::format("{}: key {} is not supported for model_type '{}' (prge implements or "
                                         "refuses every field that may change the forward)", path_, io::shown_value(key), family));
  }
}

ArchSpec ArchSpec::from_json_file(const std::string& path) {
  ConfigJson config(io::load_json_file(path), path);
  if (!config.has("model_type")) {  // transformers' AutoConfig refuses such a file too
    config.fail("model_type", fmt::format("missing (it names the model's family: one of {})",
                                          fmt::join(supported_model_types(), ", ")));
  }
  const auto model_type = config.get<std::string>("model_type", "");
  const auto& families = registry();
  const auto family = families.find(model_type);
  if (family == families.end()) {
    throw std::runtime_error(fmt::format("{}: model_type {} is not supported (supported: {}; nearest: {})", path,
                                         io::shown_value(model_type), fmt::join(supported_model_types(), ", "),
                                         nearest_family(model_type)));
  }
  auto spec = family->second.read(config);
  config.finish(model_type);
  try {
    spec.validate();
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(fmt::format("{}: {}", path, e.what()));
  }
  return spec;
}

WeightTable ArchSpec::weights() const {
  WeightTable t;
  auto add = [&](Role role, const std::string& name) { t.layer.push_back({role, name}); };
  add(Role::AttnInNorm, "input_layernorm.weight");
  if (fused_checkpoint) {
    add(Role::QKV, "self_attn.qkv_proj.weight");
  } else {
    add(Role::Q, "self_attn.q_proj.weight");
    add(Role::K, "self_attn.k_proj.weight");
    add(Role::V, "self_attn.v_proj.weight");
  }
  add(Role::O, "self_attn.o_proj.weight");
  add(Role::MlpInNorm, sandwich_norms ? "pre_feedforward_layernorm.weight" : "post_attention_layernorm.weight");
  if (fused_checkpoint) {
    add(Role::GateUp, "mlp.gate_up_proj.weight");
  } else {
    add(Role::Gate, "mlp.gate_proj.weight");
    add(Role::Up, "mlp.up_proj.weight");
  }
  add(Role::Down, "mlp.down_proj.weight");
  // Everything Llama lacks comes after its nine tensors, so Llama's parameter order is unchanged.
  if (qkv_bias) {
    add(Role::QBias, "self_attn.q_proj.bias");
    add(Role::KBias, "self_attn.k_proj.bias");
    add(Role::VBias, "self_attn.v_proj.bias");
  }
  if (o_bias) add(Role::OBias, "self_attn.o_proj.bias");
  if (mlp_bias) {
    add(Role::GateBias, "mlp.gate_proj.bias");
    add(Role::UpBias, "mlp.up_proj.bias");
    add(Role::DownBias, "mlp.down_proj.bias");
  }
  if (qk_norm) {
    add(Role::QNorm, "self_attn.q_norm.weight");
    add(Role::KNorm, "self_attn.k_norm.weight");
  }
  if (sandwich_norms) {
    add(Role::AttnOutNorm, "post_attention_layernorm.weight");
    add(Role::MlpOutNorm, "post_feedforward_layernorm.weight");
  }
  t.projections = fused_checkpoint
                      ? std::vector<std::string>{"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}
                      : std::vector<std::string>{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                 "down_proj"};
  return t;
}

WeightEntry ArchSpec::projection_weight(const std::string& projection) const {
  for (const auto& entry : weights().layer) {
    const auto module = entry.name.substr(0, entry.name.rfind('.'));  // self_attn.q_proj
    if (module.substr(module.rfind('.') + 1) == projection && entry.name.size() > 7 &&
        entry.name.compare(entry.name.size() - 7, 7, ".weight") == 0) {
      return entry;
    }
  }
  throw std::invalid_argument(fmt::format("model_type '{}' has no projection '{}'", model_type, projection));
}

std::string ArchSpec::hf_module_name(int64_t layer, const std::string& projection) const {
  const auto name = projection_weight(projection).name;
  // Gemma3ForConditionalGeneration holds the text model as model.language_model.
  return fmt::format("{}.layers.{}.{}", multimodal_wrapper ? "model.language_model" : "model", layer,
                     name.substr(0, name.rfind('.')));
}

std::vector<int64_t> ArchSpec::projection_shape(const std::string& projection) const {
  return shape(projection_weight(projection).role);
}

std::vector<std::string> ArchSpec::adapter_targets(const std::vector<std::string>& targets) const {
  const std::map<std::string, std::vector<std::string>> fused_parts{
      {"qkv_proj", {"q_proj", "k_proj", "v_proj"}}, {"gate_up_proj", {"gate_proj", "up_proj"}}};
  const auto projections = weights().projections;
  auto named = [&](const std::string& p) { return std::find(targets.begin(), targets.end(), p) != targets.end(); };
  std::vector<std::string> adapted;
  for (const auto& p : projections) {
    const auto parts = fused_parts.find(p);
    if (named(p)) {
      adapted.push_back(p);
    } else if (parts != fused_parts.end()) {
      const auto count = std::count_if(parts->second.begin(), parts->second.end(), named);
      if (count == static_cast<int64_t>(parts->second.size())) adapted.push_back(p);
      if (count > 0 && count < static_cast<int64_t>(parts->second.size())) {
        throw std::invalid_argument(fmt::format(
            "adapter.targets: model_type '{}' stores {} as one tensor, {}: target all of {} or {} itself",
            model_type, fmt::join(parts->second, ", "), p, fmt::join(parts->second, ", "), p));
      }
    }
  }
  for (const auto& t : targets) {
    bool known = std::find(projections.begin(), projections.end(), t) != projections.end();
    for (const auto& [fused, parts] : fused_parts) {
      if (std::find(projections.begin(), projections.end(), fused) != projections.end() &&
          std::find(parts.begin(), parts.end(), t) != parts.end()) {
        known = true;
      }
    }
    if (!known) {
      throw std::invalid_argument(fmt::format("unknown adapter target {} (allowed for model_type '{}': {})", io::shown_value(t),
                                              model_type, fmt::join(projections, ", ")));
    }
  }
  return adapted;
}

}  // namespace prge

#include "prge/models/llama.h"

#include "prge/io/yaml_scalars.h"

#ifdef PRGE_WITH_CUDA
#include "prge/cuda/layer_kernels.h"
#endif

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <cmath>
#include <limits>
#include <regex>
#include <set>
#include <stdexcept>

namespace prge {
namespace fs = std::filesystem;

torch::ScalarType parse_dtype(const std::string& name) {
  if (name == "float32" || name == "fp32") return torch::kFloat32;
  if (name == "bfloat16" || name == "bf16") return torch::kBFloat16;
  if (name == "float16" || name == "fp16") return torch::kFloat16;
  throw std::invalid_argument(
      fmt::format("unknown dtype '{}' (allowed: float32, bfloat16, float16)", name));
}

std::string dtype_name(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat32: return "float32";
    case torch::kBFloat16: return "bfloat16";
    case torch::kFloat16: return "float16";
    default: return "unsupported";
  }
}

const std::vector<std::string>& projection_names() {
  static const std::vector<std::string> names{"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                              "gate_proj", "up_proj", "down_proj"};
  return names;
}

namespace {

// config.json keys of a Llama model that change nothing prge computes: token ids (generation
// reads them), bookkeeping, generation defaults older transformers wrote into every config,
// initialisation and training-only dropout (zeroth-order forwards are inference forwards, as
// in MeZO), and pretraining_tp (a sliced matmul with the same result).
const std::set<std::string>& keys_without_effect() {
  static const std::set<std::string> keys{
      "_name_or_path", "architectures", "transformers_version", "torch_dtype", "dtype", "bos_token_id",
      "eos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id", "use_cache", "initializer_range",
      "pretraining_tp", "attention_dropout", "id2label", "label2id", "output_attentions", "output_hidden_states",
      "return_dict", "problem_type", "is_encoder_decoder", "is_decoder", "chunk_size_feed_forward",
      "add_cross_attention", "tie_encoder_decoder", "cross_attention_hidden_size", "torchscript", "use_bfloat16",
      "tf_legacy_loss", "pruned_heads", "finetuning_task", "tokenizer_class", "prefix", "task_specific_params",
      "bad_words_ids", "begin_suppress_tokens", "suppress_tokens", "diversity_penalty", "do_sample",
      "early_stopping", "encoder_no_repeat_ngram_size", "exponential_decay_length_penalty", "forced_bos_token_id",
      "forced_eos_token_id", "length_penalty", "max_length", "min_length", "no_repeat_ngram_size",
      "num_beam_groups", "num_beams", "num_return_sequences", "output_scores", "remove_invalid_values",
      "repetition_penalty", "return_dict_in_generate", "temperature", "top_k", "top_p", "typical_p"};
  return keys;
}

// Keys from_json_file reads (each implemented, or its unsupported values refused).
const std::set<std::string>& keys_read() {
  static const std::set<std::string> keys{
      "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
      "num_key_value_heads", "head_dim", "rms_norm_eps", "max_position_embeddings", "tie_word_embeddings",
      "hidden_act", "attention_bias", "mlp_bias", "rope_theta", "rope_parameters", "rope_scaling",
      "partial_rotary_factor", "original_max_position_embeddings"};
  return keys;
}

}  // namespace

LlamaConfig LlamaConfig::from_json_file(const std::string& path) {
  if (!fs::exists(path)) throw std::runtime_error(fmt::format("{}: model config not found", path));
  YAML::Node json;
  try {
    json = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    throw std::runtime_error(fmt::format("{}: malformed config.json: {}", path, e.what()));
  }
  if (!json.IsMap()) throw std::runtime_error(fmt::format("{}: expected a JSON object", path));
  const YAML::Node& config = json;
  auto present = [&](const char* key) { return config[key] && !config[key].IsNull(); };
  auto read = [&](const char* key, auto fallback) {
    using T = decltype(fallback);
    if (!present(key)) return fallback;
    try {
      return io::scalar_as<T>(config[key]);
    } catch (const std::exception& e) {
      throw std::runtime_error(fmt::format("{}: {}: {}", path, key, e.what()));
    }
  };
  auto required = [&](const char* key) {
    if (!present(key)) throw std::runtime_error(fmt::format("{}: missing key '{}'", path, key));
    return read(key, int64_t{0});
  };
  const auto model_type = read("model_type", std::string("llama"));
  if (model_type != "llama") {
    throw std::runtime_error(fmt::format("{}: model_type '{}' is not supported (only 'llama')",
                                         path, model_type));
  }
  for (const auto& entry : config) {
    const auto key = entry.first.as<std::string>();
    if (keys_read().count(key) || keys_without_effect().count(key)) continue;
    if (key == "quantization_config") {
      throw std::runtime_error(fmt::format("{}: quantization_config: quantized Hugging Face checkpoints are not "
                                           "supported (load a dense checkpoint or a GGUF file)", path));
    }
    if (key == "auto_map") {
      throw std::runtime_error(fmt::format("{}: auto_map: the model ships its own modeling code, which prge "
                                           "cannot check against its native Llama", path));
    }
    throw std::runtime_error(fmt::format("{}: key '{}' is not supported for model_type 'llama' (prge implements "
                                         "or refuses every field that may change the forward)", path, key));
  }
  LlamaConfig c;
  c.vocab_size = required("vocab_size");
  c.hidden_size = required("hidden_size");
  c.intermediate_size = required("intermediate_size");
  c.num_hidden_layers = required("num_hidden_layers");
  c.num_attention_heads = required("num_attention_heads");
  c.num_key_value_heads = read("num_key_value_heads", c.num_attention_heads);
  c.head_dim = read("head_dim", c.num_attention_heads > 0 ? c.hidden_size / c.num_attention_heads : int64_t{0});
  c.rms_norm_eps = read("rms_norm_eps", c.rms_norm_eps);
  c.max_position_embeddings = read("max_position_embeddings", c.max_position_embeddings);
  c.tie_word_embeddings = read("tie_word_embeddings", c.tie_word_embeddings);
  for (const char* key : {"attention_bias", "mlp_bias"}) {
    if (read(key, false)) throw std::runtime_error(fmt::format("{}: '{}: true' is not supported", path, key));
  }
  const auto act = read("hidden_act", std::string("silu"));
  if (act != "silu" && act != "swish") {
    throw std::runtime_error(fmt::format("{}: hidden_act '{}' is not supported (only silu)", path, act));
  }
  c.validate();
  c.rope = read_rope_parameters(config, path, c.head_dim, c.max_position_embeddings);
  return c;
}

void LlamaConfig::validate() const {
  if (vocab_size <= 0 || hidden_size <= 0 || intermediate_size <= 0 || num_hidden_layers <= 0 ||
      num_attention_heads <= 0 || num_key_value_heads <= 0 || head_dim <= 0) {
    throw std::invalid_argument("Llama config: every size must be positive");
  }
  if (num_attention_heads % num_key_value_heads != 0) {
    throw std::invalid_argument(fmt::format(
        "Llama config: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
        num_attention_heads, num_key_value_heads));
  }
  if (head_dim % 2 != 0) throw std::invalid_argument("Llama config: head_dim must be even (RoPE)");
}

int64_t LlamaConfig::parameter_count() const {
  const int64_t d = hidden_size, kv = num_key_value_heads * head_dim, q = num_attention_heads * head_dim;
  const int64_t per_layer = d * q + 2 * d * kv + q * d + 3 * d * intermediate_size + 2 * d;
  return vocab_size * d * (tie_word_embeddings ? 1 : 2) + num_hidden_layers * per_layer + d;
}

LoraFaLinear& LlamaLayer::projection(const std::string& name) {
  if (name == "q_proj") return qkv.part(0);
  if (name == "k_proj") return qkv.part(1);
  if (name == "v_proj") return qkv.part(2);
  if (name == "o_proj") return o_proj;
  if (name == "gate_proj") return gate_up.part(0);
  if (name == "up_proj") return gate_up.part(1);
  if (name == "down_proj") return down_proj;
  throw std::invalid_argument(fmt::format(
      "unknown adapter target '{}' (allowed: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, "
      "down_proj)",
      name));
}

std::vector<CopyStackRequest> LlamaLayer::copy_requests() const {
  std::vector<CopyStackRequest> requests;
  auto add = [&](std::vector<CopyStackRequest> more) { requests.insert(requests.end(), more.begin(), more.end()); };
  add(qkv.copy_requests());
  if (o_proj.has_adapter()) requests.push_back(o_proj.copy_request());
  add(gate_up.copy_requests());
  if (down_proj.has_adapter()) requests.push_back(down_proj.copy_request());
  return requests;
}

namespace {

torch::Tensor take(io::TensorMap& weights, const std::string& name, std::vector<int64_t> shape,
                   const torch::Device& device, torch::ScalarType dtype) {
  auto it = weights.find(name);
  if (it == weights.end()) throw std::runtime_error(fmt::format("missing weight '{}'", name));
  auto t = it->second;
  if (t.sizes() != at::IntArrayRef(shape)) {
    throw std::runtime_error(fmt::format("weight '{}' has shape {}, expected {}", name,
                                         fmt::join(t.sizes(), "x"), fmt::join(shape, "x")));
  }
  weights.erase(it);
  return t.to(device, dtype).contiguous();
}

// RMSNorm (Zhang & Sennrich): x / sqrt(mean(x^2) + eps) * w, one fused kernel where
// ATen has one (statistics in float32 for half types, as in HF's LlamaRMSNorm).
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  return at::rms_norm(x, {x.size(-1)}, weight, eps);
}

// RoPE, HF layout: x*cos + rotate_half(x)*sin with rotate_half(x) = [-x2, x1].
// Swapping the halves (one copy) and a sign-folded sin table [-sin, sin] give the same
// numbers with two fewer passes.
torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos,
                         const torch::Tensor& signed_sin) {
  auto sizes = x.sizes().vec();
  const int64_t hd = sizes.back();
  std::vector<int64_t> halves(sizes.begin(), sizes.end() - 1);
  halves.push_back(2);
  halves.push_back(hd / 2);
  auto swapped = x.reshape(halves).flip(-2).reshape(sizes);
  return torch::addcmul(x * cos, swapped, signed_sin);
}

}  // namespace

LlamaModel::LlamaModel(LlamaConfig config, io::TensorMap weights, const torch::Device& device,
                       torch::ScalarType dtype)
    : config_(std::move(config)), device_(device), dtype_(dtype) {
  config_.validate();
  const auto& c = config_;
  const int64_t d = c.hidden_size, q = c.num_attention_heads * c.head_dim,
                kv = c.num_key_value_heads * c.head_dim, f = c.intermediate_size;
  rope_inv_freq_ = rope_inverse_frequencies(c.rope, c.head_dim, 0, device);
  embed_tokens_ = take(weights, "model.embed_tokens.weight", {c.vocab_size, d}, device, dtype);
  final_norm_ = take(weights, "model.norm.weight", {d}, device, dtype);
  if (c.tie_word_embeddings) {
    weights.erase("lm_head.weight");
    lm_head_ = embed_tokens_;
  } else {
    lm_head_ = take(weights, "lm_head.weight", {c.vocab_size, d}, device, dtype);
  }
  layers_.resize(static_cast<size_t>(c.num_hidden_layers));
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    auto& layer = layers_[static_cast<size_t>(i)];
    const auto p = fmt::format("model.layers.{}.", i);
    auto tensor = [&](const std::string& name, int64_t out, int64_t in) {
      return take(weights, p + name + ".weight", {out, in}, device, dtype);
    };
    auto label = [&](const std::string& proj) { return fmt::format("layers.{}.{}", i, proj); };
    layer.input_norm = take(weights, p + "input_layernorm.weight", {d}, device, dtype);
    layer.post_attention_norm =
        take(weights, p + "post_attention_layernorm.weight", {d}, device, dtype);
    layer.qkv = FusedLoraFaProjection(
        {tensor("self_attn.q_proj", q, d), tensor("self_attn.k_proj", kv, d),
         tensor("self_attn.v_proj", kv, d)},
        {label("q_proj"), label("k_proj"), label("v_proj")});
    layer.o_proj = LoraFaLinear(tensor("self_attn.o_proj", d, q), label("o_proj"));
    layer.gate_up = FusedLoraFaProjection({tensor("mlp.gate_proj", f, d), tensor("mlp.up_proj", f, d)},
                                          {label("gate_proj"), label("up_proj")});
    layer.down_proj = LoraFaLinear(tensor("mlp.down_proj", d, f), label("down_proj"));
  }
  for (const auto& [name, tensor] : weights) {
    if (name.find("rotary_emb") == std::string::npos) {
      throw std::runtime_error(fmt::format("unexpected weight '{}' in checkpoint", name));
    }
  }
}

LlamaModel LlamaModel::from_pretrained(const std::string& dir, const torch::Device& device,
                                       torch::ScalarType dtype) {
  if (!fs::is_directory(dir)) {
    throw std::runtime_error(fmt::format("{}: model directory not found", dir));
  }
  const auto config_path = (fs::path(dir) / "config.json").string();
  LlamaConfig config;
  try {
    config = LlamaConfig::from_json_file(config_path);
  } catch (const std::invalid_argument& e) {  // a value of the wrong type: name the file
    throw std::runtime_error(fmt::format("{}: {}", config_path, e.what()));
  }
  io::TensorMap weights;
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() == ".safetensors") files.push_back(entry.path());
  }
  if (files.empty()) throw std::runtime_error(fmt::format("{}: no *.safetensors weights", dir));
  std::sort(files.begin(), files.end());
  for (const auto& file : files) weights.merge(io::load_safetensors(file.string()));
  try {
    return LlamaModel(std::move(config), std::move(weights), device, dtype);
  } catch (const std::exception& e) {  // a missing, extra or misshapen weight: name the model
    throw std::runtime_error(fmt::format("{}: {}", dir, e.what()));
  }
}

LlamaModel LlamaModel::random(const LlamaConfig& c, uint64_t seed, const torch::Device& device,
                              torch::ScalarType dtype) {
  c.validate();
  torch::manual_seed(seed);
  io::TensorMap w;
  auto options = torch::TensorOptions().dtype(dtype).device(device);
  auto normal = [&](std::vector<int64_t> shape) { return torch::randn(shape, options).mul_(0.02); };
  const int64_t d = c.hidden_size, q = c.num_attention_heads * c.head_dim,
                kv = c.num_key_value_heads * c.head_dim, f = c.intermediate_size;
  w["model.embed_tokens.weight"] = normal({c.vocab_size, d});
  w["model.norm.weight"] = torch::ones({d}, options);
  if (!c.tie_word_embeddings) w["lm_head.weight"] = normal({c.vocab_size, d});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const auto p = fmt::format("model.layers.{}.", i);
    w[p + "input_layernorm.weight"] = torch::ones({d}, options);
    w[p + "post_attention_layernorm.weight"] = torch::ones({d}, options);
    w[p + "self_attn.q_proj.weight"] = normal({q, d});
    w[p + "self_attn.k_proj.weight"] = normal({kv, d});
    w[p + "self_attn.v_proj.weight"] = normal({kv, d});
    w[p + "self_attn.o_proj.weight"] = normal({d, q});
    w[p + "mlp.gate_proj.weight"] = normal({f, d});
    w[p + "mlp.up_proj.weight"] = normal({f, d});
    w[p + "mlp.down_proj.weight"] = normal({d, f});
  }
  return LlamaModel(c, std::move(w), device, dtype);
}

namespace {
// PEFT's get_pattern_key: the first key K of `patterns` such that the module name matches
// (.*\.)?(K)$ from its start.
template <typename T>
const std::pair<std::string, T>* pattern_for(const std::vector<std::pair<std::string, T>>& patterns,
                                             const std::string& module) {
  for (const auto& entry : patterns) {
    try {
      if (std::regex_match(module, std::regex("(.*\\.)?(" + entry.first + ")"))) return &entry;
    } catch (const std::regex_error& e) {
      throw std::invalid_argument(fmt::format("adapter pattern '{}' is not a regular expression: {}", entry.first,
                                              e.what()));
    }
  }
  return nullptr;
}
}  // namespace

int64_t AdapterOptions::rank_of(const std::string& module) const {
  const auto* match = pattern_for(rank_pattern, module);
  return match ? match->second : rank;
}

double AdapterOptions::scaling_of(const std::string& module) const {
  const auto* match = pattern_for(alpha_pattern, module);
  const double a = match ? match->second : alpha;
  const auto r = static_cast<double>(rank_of(module));
  return use_rslora ? a / std::sqrt(r) : a / r;
}

void LlamaModel::attach_adapters(const AdapterOptions& options) {
  for (const auto& target : options.targets) {
    if (std::find(projection_names().begin(), projection_names().end(), target) ==
        projection_names().end()) {
      layers_.front().projection(target);  // throws the descriptive error
    }
  }
  int64_t index = 0;
  for (auto& layer : layers_) {
    for (const auto& name : projection_names()) {
      if (std::find(options.targets.begin(), options.targets.end(), name) == options.targets.end()) {
        continue;
      }
      const auto module = hf_module_name(static_cast<size_t>(&layer - layers_.data()), name);
      layer.projection(name).attach_adapter(options.rank_of(module), options.scaling_of(module), options.init_seed,
                                            index++);
    }
    layer.qkv.refresh_adapters();
    layer.gate_up.refresh_adapters();
  }
  adapter_buffer_ = AdapterBuffer(adapted_layers());
}

namespace {
// Parameter indices in full_parameters() order: the embedding, then per layer input_norm,
// q, k, v, o, post_attention_norm, gate, up, down, then the final norm and lm_head.
constexpr int64_t kPerLayer = 9;
int64_t layer_param(size_t layer, int64_t offset) {
  return 1 + static_cast<int64_t>(layer) * kPerLayer + offset;
}
enum LayerParam : int64_t { kInputNorm = 0, kQ, kK, kV, kO, kPostNorm, kGate, kUp, kDown };
}  // namespace

bool LlamaModel::use_layer_kernels() const {
#ifdef PRGE_WITH_CUDA
  // The kernels move 16 bytes per access: every row length a multiple of 8 elements
  // (head_dim of 16, so that each RoPE half is too).
  const auto& c = config_;
  const bool vectorizable = c.head_dim % 16 == 0 && c.hidden_size % 8 == 0 && c.intermediate_size % 8 == 0;
  return layer_kernels_ && vectorizable && device_.is_cuda() && !at::GradMode::is_enabled();
#else
  return false;
#endif
}

torch::Tensor LlamaModel::weight(const torch::Tensor& w, int64_t index,
                                 const WeightPerturbation* perturbation, torch::Tensor out) const {
  if (!perturbation) return w;
  const auto& p = *perturbation;
  auto z = p.stream->noise(p.step, index, p.query, w.sizes(), w.device());  // float32
  if (!out.defined()) out = torch::empty_like(w);
  // w + scale * z computed in float32 (type promotion) and rounded once into w's dtype: one
  // pass, written straight where the forward reads it.
  at::add_out(out, w, z, p.scale);
  return out;
}

torch::Tensor LlamaModel::group_weight(const FusedLoraFaProjection& group, std::vector<int64_t> indices,
                                       const WeightPerturbation* perturbation) const {
  int64_t rows = 0;
  for (size_t j = 0; j < group.parts(); ++j) rows += group.part(j).weight().size(0);
  const auto& first = group.part(0).weight();
  auto fused = torch::empty({rows, first.size(1)}, first.options());
  int64_t offset = 0;
  for (size_t j = 0; j < group.parts(); ++j) {
    const auto& w = group.part(j).weight();
    weight(w, indices.at(j), perturbation, fused.narrow(0, offset, w.size(0)));
    offset += w.size(0);
  }
  return fused;
}

torch::Tensor LlamaModel::attention_block(size_t i, const torch::Tensor& h, const torch::Tensor& cos,
                                          const torch::Tensor& sin, const MaterializedPlan* plan,
                                          const WeightPerturbation* perturbation) const {
  const auto& layer = layers_[i];
  const int64_t n = h.size(0), t = h.size(1), hd = config_.head_dim;
  torch::Tensor qkv_weight;  // undefined: the stored fused weight
  if (perturbation) {
    qkv_weight = group_weight(layer.qkv, {layer_param(i, kQ), layer_param(i, kK), layer_param(i, kV)},
                              perturbation);
  }
  const auto qkv = layer.qkv.forward(h, plan, qkv_weight);
  auto rope = [&](const torch::Tensor& x) {
#ifdef PRGE_WITH_CUDA
    if (use_layer_kernels()) return cuda::rope(x, cos, sin);
#endif
    return apply_rope(x, cos, sin);
  };
  auto q = rope(qkv[0].view({n, t, -1, hd}).transpose(1, 2));
  auto k = rope(qkv[1].view({n, t, -1, hd}).transpose(1, 2));
  auto v = qkv[2].view({n, t, -1, hd}).transpose(1, 2);
  auto attn = at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true, std::nullopt,
                                               /*enable_gqa=*/true);
  attn = attn.transpose(1, 2).reshape({n, t, -1});
  return layer.o_proj.forward(attn, plan,
                              perturbation ? weight(layer.o_proj.weight(), layer_param(i, kO), perturbation)
                                           : torch::Tensor());
}

torch::Tensor LlamaModel::mlp_block(size_t i, const torch::Tensor& h, const MaterializedPlan* plan,
                                    const WeightPerturbation* perturbation) const {
  const auto& layer = layers_[i];
  torch::Tensor gate_up_weight, down_weight;
  if (perturbation) {
    gate_up_weight = group_weight(layer.gate_up, {layer_param(i, kGate), layer_param(i, kUp)}, perturbation);
    down_weight = weight(layer.down_proj.weight(), layer_param(i, kDown), perturbation);
  }
#ifdef PRGE_WITH_CUDA
  if (use_layer_kernels()) {
    return layer.down_proj.forward(cuda::swiglu(layer.gate_up.forward_fused(h, plan, gate_up_weight)), plan,
                                   down_weight);
  }
#endif
  const auto gate_up = layer.gate_up.forward(h, plan, gate_up_weight);
  return layer.down_proj.forward(at::silu(gate_up[0]).mul_(gate_up[1]), plan, down_weight);
}

torch::Tensor LlamaModel::hidden_states(const torch::Tensor& input_ids, const MaterializedPlan* plan,
                                        const WeightPerturbation* perturbation) const {
  if (input_ids.dim() != 2 || input_ids.scalar_type() != torch::kInt64) {
    throw std::invalid_argument(fmt::format(
        "input_ids must be a 2-D int64 tensor [batch, seq], got {}-D {}", input_ids.dim(),
        c10::toString(input_ids.scalar_type())));
  }
  const int64_t t = input_ids.size(1);
  const auto [cos, sin] = rope_tables(rope_frequencies(t), config_.rope.attention_factor,
                                      torch::arange(t, torch::TensorOptions().dtype(torch::kInt64).device(device_)),
                                      dtype_);  // [t, hd], sin sign-folded (see apply_rope)

  // x: the residual stream; h: the normalized input of the next block. Each block's output
  // is added to x and normalized for the next block in one step (one kernel on CUDA).
  auto ids = input_ids.to(device_);
  auto x = at::embedding(weight(embed_tokens_, 0, perturbation), ids);
  auto h = rms_norm(x, weight(layers_.front().input_norm, layer_param(0, kInputNorm), perturbation),
                    config_.rms_norm_eps);
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (plan) plan->prepare_copies(layers_[i].copy_requests(), dtype_);  // the layer's B copies, one kernel
    h = add_rms_norm(x, attention_block(i, h, cos, sin, plan, perturbation),
                     weight(layers_[i].post_attention_norm, layer_param(i, kPostNorm), perturbation));
    const bool last = i + 1 == layers_.size();
    const auto next_norm = last ? weight(final_norm_, layer_param(layers_.size(), 0), perturbation)
                                : weight(layers_[i + 1].input_norm, layer_param(i + 1, kInputNorm), perturbation);
    h = add_rms_norm(x, mlp_block(i, h, plan, perturbation), next_norm);
  }
  return h;
}

torch::Tensor LlamaModel::rope_frequencies(int64_t length) const {
  return length > config_.rope.rescaled_beyond()
             ? rope_inverse_frequencies(config_.rope, config_.head_dim, length, device_)
             : rope_inv_freq_;
}

torch::Tensor LlamaModel::forward_cached(const torch::Tensor& input_ids, const torch::Tensor& positions,
                                         const torch::Tensor& key_mask, KvCache& cache) const {
  const int64_t n = input_ids.size(0), t = input_ids.size(1), hd = config_.head_dim;
  const int64_t past = cache.length(), total = past + t;
  if (key_mask.size(0) != n || key_mask.size(1) != total) {
    throw std::invalid_argument(fmt::format("forward_cached: key_mask must be [{}, {}]", n, total));
  }
  if (cache.keys.empty()) cache.keys.resize(layers_.size()), cache.values.resize(layers_.size());
  // RoPE at each row's own positions: [N, 1, t, hd], sign-folded as in hidden_states. The
  // length that dynamic / longrope RoPE depend on is this call's, 1 + its largest position
  // (as transformers computes it per forward).
  const auto device_positions = positions.to(device_, torch::kInt64);
  int64_t length = 0;
  if (config_.rope.rescaled_beyond() < std::numeric_limits<int64_t>::max() && device_positions.numel()) {
    length = device_positions.max().item<int64_t>() + 1;
  }
  auto [cos, sin] = rope_tables(rope_frequencies(length), config_.rope.attention_factor, device_positions, dtype_);
  cos = cos.unsqueeze(1);
  sin = sin.unsqueeze(1);
  // Query a (absolute position past + a) sees real keys up to itself, and always itself (so
  // a padding query has one key and no all-masked row).
  auto key_index = torch::arange(total, torch::TensorOptions().dtype(torch::kInt64).device(device_));
  auto query_index = key_index.narrow(0, past, t).unsqueeze(1);
  auto causal = key_index.unsqueeze(0) <= query_index;                              // [t, total]
  auto mask = (key_mask.to(device_, torch::kBool).unsqueeze(1) & causal.unsqueeze(0)) |
              (key_index.unsqueeze(0) == query_index).unsqueeze(0);                // [N, t, total]
  mask = mask.unsqueeze(1);
  auto x = at::embedding(embed_tokens_, input_ids.to(device_));
  for (size_t i = 0; i < layers_.size(); ++i) {
    const auto& layer = layers_[i];
    auto qkv = layer.qkv.forward(rms_norm(x, layer.input_norm, config_.rms_norm_eps), nullptr);
    auto q = apply_rope(qkv[0].view({n, t, -1, hd}).transpose(1, 2), cos, sin);
    auto k = apply_rope(qkv[1].view({n, t, -1, hd}).transpose(1, 2), cos, sin);
    auto v = qkv[2].view({n, t, -1, hd}).transpose(1, 2);
    cache.keys[i] = past ? torch::cat({cache.keys[i], k}, 2) : k.contiguous();
    cache.values[i] = past ? torch::cat({cache.values[i], v}, 2) : v.contiguous();
    auto attn = at::scaled_dot_product_attention(q, cache.keys[i], cache.values[i], mask, 0.0,
                                                 /*is_causal=*/false, std::nullopt, /*enable_gqa=*/true);
    x = x + layer.o_proj.forward(attn.transpose(1, 2).reshape({n, t, -1}));
    x = x + mlp_block(i, rms_norm(x, layer.post_attention_norm, config_.rms_norm_eps), nullptr, nullptr);
  }
  return rms_norm(x, final_norm_, config_.rms_norm_eps);
}

torch::Tensor LlamaModel::add_rms_norm(torch::Tensor& x, const torch::Tensor& delta,
                                       const torch::Tensor& norm_weight) const {
#ifdef PRGE_WITH_CUDA
  if (use_layer_kernels()) return cuda::add_rms_norm_(x, delta, norm_weight, config_.rms_norm_eps);
#endif
  x = x + delta;
  return rms_norm(x, norm_weight, config_.rms_norm_eps);
}

torch::Tensor LlamaModel::project_to_vocab(const torch::Tensor& hidden_rows,
                                           const WeightPerturbation* perturbation) const {
  // Tied: the embedding's own perturbation (one parameter); untied: lm_head is the last one.
  const int64_t index = config_.tie_word_embeddings ? 0 : layer_param(layers_.size(), 1);
  return at::linear(hidden_rows, weight(lm_head_, index, perturbation)).to(torch::kFloat32);
}

torch::Tensor LlamaModel::logits(const torch::Tensor& input_ids) const {
  return project_to_vocab(hidden_states(input_ids));
}

std::vector<LoraFaLinear*> LlamaModel::adapted_layers() {
  std::vector<LoraFaLinear*> out;
  for (auto& layer : layers_) {
    for (const auto& name : projection_names()) {
      auto& proj = layer.projection(name);
      if (proj.has_adapter()) out.push_back(&proj);
    }
  }
  return out;
}

std::vector<ZoParameter> LlamaModel::adapter_parameters() {
  std::vector<ZoParameter> out;
  for (auto* layer : adapted_layers()) {
    out.push_back({layer->lora_b(), layer->param_index(), NoiseLayout::Block,
                   layer->name() + ".lora_b"});
  }
  return out;
}

std::string LlamaModel::hf_module_name(size_t layer, const std::string& projection) {
  const bool attention = projection == "q_proj" || projection == "k_proj" || projection == "v_proj" ||
                         projection == "o_proj";
  return fmt::format("model.layers.{}.{}.{}", layer, attention ? "self_attn" : "mlp", projection);
}

std::vector<ZoParameter> LlamaModel::full_parameters() {
  std::vector<ZoParameter> out;
  auto add = [&](torch::Tensor& t, const std::string& name) {
    out.push_back({t, static_cast<int64_t>(out.size()), NoiseLayout::PerQuery, name});
  };
  add(embed_tokens_, "model.embed_tokens.weight");
  for (size_t i = 0; i < layers_.size(); ++i) {
    auto& layer = layers_[i];
    const auto p = fmt::format("model.layers.{}.", i);
    add(layer.input_norm, p + "input_layernorm.weight");
    for (const auto& name : projection_names()) {
      add(layer.projection(name).mutable_weight(), hf_module_name(i, name) + ".weight");
      if (name == "o_proj") add(layer.post_attention_norm, p + "post_attention_layernorm.weight");
    }
  }
  add(final_norm_, "model.norm.weight");
  if (!config_.tie_word_embeddings) add(lm_head_, "lm_head.weight");
  return out;
}

}  // namespace prge

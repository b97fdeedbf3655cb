#include "prge/models/causal_lm.h"
#include "prge/models/weight_files.h"

#include "prge/counter_rng.h"
#include "prge/io/shown_text.h"

#ifdef PRGE_WITH_CUDA
#include "prge/cuda/gated_low_rank.h"
#include "prge/cuda/layer_kernels.h"
#include "prge/cuda/quantized_kernels.h"
#include "prge/cuda/weight_noise_kernels.h"
#endif

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>

namespace prge {
namespace fs = std::filesystem;

torch::ScalarType parse_dtype(const std::string& name) {
  if (name == "float32" || name == "fp32") return torch::kFloat32;
  if (name == "bfloat16" || name == "bf16") return torch::kBFloat16;
  if (name == "float16" || name == "fp16") return torch::kFloat16;
  throw std::invalid_argument(
      fmt::format("unknown dtype {} (allowed: float32, bfloat16, float16)", io::shown_value(name)));
}

std::string dtype_name(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat32: return "float32";
    case torch::kBFloat16: return "bfloat16";
    case torch::kFloat16: return "float16";
    default: return "unsupported";
  }
}

LoraFaLinear* DecoderLayer::projection(const std::string& name) {
  for (auto* group : {&qkv, &gate_up}) {
    for (size_t j = 0; j < group->parts(); ++j) {
      if (group->part(j).projection() == name) return &group->part(j);
    }
  }
  if (o_proj.projection() == name) return &o_proj;
  if (down_proj.projection() == name) return &down_proj;
  return nullptr;
}

std::vector<CopyStackRequest> DecoderLayer::copy_requests() const {
  std::vector<CopyStackRequest> requests;
  auto add = [&](std::vector<CopyStackRequest> more) { requests.insert(requests.end(), more.begin(), more.end()); };
  add(qkv.copy_requests());
  if (o_proj.has_adapter()) requests.push_back(o_proj.copy_request());
  add(gate_up.copy_requests());
  if (down_proj.has_adapter()) requests.push_back(down_proj.copy_request());
  return requests;
}

namespace {

// A weight that is there but unusable (misshapen, integer, non-finite): its name travels with
// the error so that from_pretrained can name the file (a shard) that holds it.
struct BadWeight : std::runtime_error {
  BadWeight(std::string weight, const std::string& what) : std::runtime_error(what), name(std::move(weight)) {}
  std::string name;
};

torch::Tensor take(io::TensorMap& weights, const std::string& name, const std::vector<int64_t>& shape,
                   const torch::Device& device, torch::ScalarType dtype) {
  auto it = weights.find(name);
  if (it == weights.end()) throw std::runtime_error(fmt::format("missing weight '{}'", name));
  auto t = it->second;
  if (t.sizes() != at::IntArrayRef(shape)) {
    throw BadWeight(name, fmt::format("weight '{}' has shape {}, expected {}", name,
                                         fmt::join(t.sizes(), "x"), fmt::join(shape, "x")));
  }
  if (!t.is_floating_point()) {  // torch would convert the integers silently
    throw BadWeight(name, fmt::format("weight '{}' has dtype {}; a model's weights are floating point "
                                         "(float32, bfloat16 or float16)", name,
                                         c10::getDtypeNames(t.scalar_type()).first));
  }
  weights.erase(it);
  auto out = t.to(device, dtype).contiguous();
  // A NaN or inf would only show as a NaN loss at the first evaluation; one made by the
  // conversion (float32 values past float16's 65504) has a fix the message can give.
  if (!torch::isfinite(out).all().item<bool>()) {
    const auto bad = out.numel() - torch::isfinite(out).sum().item<int64_t>();
    const bool stored = !torch::isfinite(t).all().item<bool>();
    const std::string wider = dtype == torch::kFloat16    ? " (model.dtype: float32 or bfloat16 keeps them)"
                              : dtype == torch::kBFloat16 ? " (model.dtype: float32 may keep them)"
                                                          : "";
    throw BadWeight(name, fmt::format(
        "weight '{}' holds {} non-finite value(s) (NaN or inf) of {}{}", name, bad, out.numel(),
        stored ? " in the file: it is damaged or was saved by a diverged run"
               : fmt::format(" after conversion from {} to {}: its values exceed {}'s range{}",
                             c10::getDtypeNames(t.scalar_type()).first, dtype_name(dtype), dtype_name(dtype),
                             wider)));
  }
  return out;
}

// x*cos + swap_halves(x)*signed_sin: HF's x*cos + rotate_half(x)*sin with a sign-folded sin
// table [-sin, sin] (two fewer passes than rotate_half).
torch::Tensor rotate(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& signed_sin) {
  auto sizes = x.sizes().vec();
  const int64_t hd = sizes.back();
  std::vector<int64_t> halves(sizes.begin(), sizes.end() - 1);
  halves.push_back(2);
  halves.push_back(hd / 2);
  auto swapped = x.reshape(halves).flip(-2).reshape(sizes);
  return torch::addcmul(x * cos, swapped, signed_sin);
}

bool is_bias(Role role) {
  switch (role) {
    case Role::QBias: case Role::KBias: case Role::VBias: case Role::OBias:
    case Role::GateBias: case Role::UpBias: case Role::DownBias: return true;
    default: return false;
  }
}

bool is_norm(Role role) {
  switch (role) {
    case Role::AttnInNorm: case Role::MlpInNorm: case Role::QNorm: case Role::KNorm:
    case Role::AttnOutNorm: case Role::MlpOutNorm: return true;
    default: return false;
  }
}

// A gemma3 wrapper checkpoint's text weights under Gemma3ForCausalLM's names; its vision
// weights dropped.
io::TensorMap text_weights_of_wrapper(io::TensorMap weights) {
  io::TensorMap out;
  for (auto& [name, tensor] : weights) {
    const auto text = wrapper_text_weight_name(name);
    if (!text.empty()) out[text] = tensor;
  }
  return out;
}

}  // namespace

std::vector<Role> CausalLM::qkv_roles() const {
  return spec_.fused_checkpoint ? std::vector<Role>{Role::QKV} : std::vector<Role>{Role::Q, Role::K, Role::V};
}

std::vector<Role> CausalLM::gate_up_roles() const {
  return spec_.fused_checkpoint ? std::vector<Role>{Role::GateUp} : std::vector<Role>{Role::Gate, Role::Up};
}

CausalLM::CausalLM(ArchSpec spec, io::TensorMap weights, const torch::Device& device, torch::ScalarType dtype,
                   WeightFormat format)
    : spec_(std::move(spec)), table_(spec_.weights()), device_(device), dtype_(dtype) {
  if (format.bits != 0 && format.bits != 4 && format.bits != 8 && format.bits != WeightFormat::kDense) {
    throw std::invalid_argument(fmt::format("model.quantize: {} bits (allowed: int8, int4)", format.bits));
  }
  spec_.validate();
  const auto& s = spec_;
  for (size_t k = 0; k < table_.layer.size(); ++k) offsets_[table_.layer[k].role] = static_cast<int64_t>(k);
  if (s.multimodal_wrapper) weights = text_weights_of_wrapper(std::move(weights));
  for (size_t r = 0; r < s.ropes.size(); ++r) {
    rope_inv_freq_.push_back(rope_inverse_frequencies(s.ropes[r], s.rotary_dim(), 0, device));
  }
  if (s.scale_embeddings) {  // sqrt(hidden) rounded to the dtype first, as transformers' Gemma does
    embedding_scale_ = torch::scalar_tensor(std::sqrt(static_cast<double>(s.hidden_size)), torch::kFloat32)
                           .to(dtype).to(torch::kFloat64).item<double>();
  }
  embed_tokens_ = take(weights, "model.embed_tokens.weight", {s.vocab_size, s.hidden_size}, device, dtype);
  final_norm_ = take(weights, "model.norm.weight", {s.hidden_size}, device, dtype);
  // Tied unless the checkpoint holds its own lm_head (transformers 5 then uses the stored one).
  if (s.tie_word_embeddings && !weights.count("lm_head.weight")) {
    lm_head_ = embed_tokens_;
  } else if (s.tie_word_embeddings) {
    lm_head_ = take(weights, "lm_head.weight", {s.vocab_size, s.hidden_size}, device, dtype);
    spec_.tie_word_embeddings = false;
  } else {
    lm_head_ = take(weights, "lm_head.weight", {s.vocab_size, s.hidden_size}, device, dtype);
  }
  layers_.resize(static_cast<size_t>(s.num_hidden_layers));
  for (int64_t i = 0; i < s.num_hidden_layers; ++i) {
    auto& layer = layers_[static_cast<size_t>(i)];
    std::map<Role, torch::Tensor> loaded;
    for (const auto& entry : table_.layer) {
      const auto name = fmt::format("model.layers.{}.{}", i, entry.name);
      const auto shape = s.shape(entry.role);
      const auto stored = quantized_tensor_names(name);
      if (weights.count(stored[0])) {  // kept quantized as the checkpoint stores it (a GGUF's blocks)
        auto get = [&](const std::string& n) {
          auto it = weights.find(n);
          if (it == weights.end()) return torch::Tensor();
          auto t = it->second;
          weights.erase(it);
          return t;
        };
        auto q = get(stored[0]), scales = get(stored[1]), offsets = get(stored[2]), f = get(stored[3]);
        if (!scales.defined() || !f.defined() || shape.size() != 2) {
          throw BadWeight(stored[0], fmt::format("quantized weight '{}': needs .qweight, .scales and .format", name));
        }
        auto stored_weight = [&] {  // a damaged block names the file that holds it (from_pretrained)
          try {
            return QuantizedWeight::from_tensors(name, q, scales, offsets, f, shape[0], shape[1]);
          } catch (const std::exception& e) {
            throw BadWeight(stored[0], e.what());
          }
        }();
        if (format.bits == WeightFormat::kDense) {
          loaded[entry.role] = stored_weight.dequantize(dtype).to(device).contiguous();
        } else {
          layer.quantized[entry.role] = stored_weight.to(device);
        }
      } else {
        loaded[entry.role] = take(weights, name, shape, device, dtype);
        if (format.bits > 0 && shape.size() == 2 && !is_norm(entry.role)) {  // quantized at load, round to nearest
          const int64_t group = format.bits == 8 && format.group_size == 0 ? shape[1] : format.group_size;
          layer.quantized[entry.role] = quantize(loaded[entry.role], format.bits, group);
        }
      }
      if (layer.quantized.count(entry.role)) {  // the projection keeps only its shape: an expanded zero
        loaded[entry.role] = torch::zeros({1, 1}, torch::TensorOptions().dtype(dtype).device(device)).expand(shape);
      }
    }
    auto label = [&](Role role) {
      for (const auto& entry : table_.layer) {
        if (entry.role == role) {
          auto name = entry.name.substr(0, entry.name.rfind('.'));  // self_attn.q_proj
          return fmt::format("layers.{}.{}", i, name.substr(name.rfind('.') + 1));
        }
      }
      return std::string();
    };
    auto bias_of = [&](Role role) { return loaded.count(role) ? loaded[role] : torch::Tensor(); };
    auto group = [&](const std::vector<Role>& roles, const std::vector<Role>& bias_roles) {
      std::vector<torch::Tensor> ws, bs;
      std::vector<std::string> names;
      for (size_t j = 0; j < roles.size(); ++j) {
        ws.push_back(loaded.at(roles[j]));
        names.push_back(label(roles[j]));
        if (j < bias_roles.size() && loaded.count(bias_roles[j])) bs.push_back(loaded[bias_roles[j]]);
      }
      return FusedLoraFaProjection(ws, names, bs);
    };
    layer.qkv = group(qkv_roles(), {Role::QBias, Role::KBias, Role::VBias});
    layer.o_proj = LoraFaLinear(loaded.at(Role::O), label(Role::O), bias_of(Role::OBias));
    layer.gate_up = group(gate_up_roles(), {Role::GateBias, Role::UpBias});
    layer.down_proj = LoraFaLinear(loaded.at(Role::Down), label(Role::Down), bias_of(Role::DownBias));
    for (const auto& [role, tensor] : loaded) {
      if (is_norm(role) || is_bias(role)) layer.tensors[role] = tensor;
    }
    // Biases live in the projections (views of fused storage); the map keeps those views.
    if (layer.qkv.bias().defined()) {
      const auto roles = std::vector<Role>{Role::QBias, Role::KBias, Role::VBias};
      for (size_t j = 0; j < layer.qkv.parts(); ++j) {
        if (j < roles.size() && layer.tensors.count(roles[j])) layer.tensors[roles[j]] = layer.qkv.part(j).bias();
      }
    }
    if (layer.gate_up.bias().defined()) {
      const auto roles = std::vector<Role>{Role::GateBias, Role::UpBias};
      for (size_t j = 0; j < layer.gate_up.parts(); ++j) {
        if (j < roles.size() && layer.tensors.count(roles[j])) layer.tensors[roles[j]] = layer.gate_up.part(j).bias();
      }
    }
    if (layer.o_proj.bias().defined()) layer.tensors[Role::OBias] = layer.o_proj.bias();
    if (layer.down_proj.bias().defined()) layer.tensors[Role::DownBias] = layer.down_proj.bias();
  }
  for (const auto& [name, tensor] : weights) {
    if (name.find("rotary_emb") == std::string::npos) {  // BadWeight: from_pretrained names the file holding it
      throw BadWeight(name, fmt::format("unexpected weight '{}' in checkpoint (model_type {})", name, s.model_type));
    }
  }
}

WeightFormat weight_format(const std::string& quantize, int64_t group_size) {
  if (quantize == "none") return {};
  if (quantize == "dense") return {WeightFormat::kDense, 0};
  if (quantize == "int8") return {8, group_size};
  if (quantize == "int4") return {4, group_size ? group_size : 64};
  throw std::invalid_argument("quantize: none, dense, int8 or int4, got '" + quantize + "'");
}

CausalLM CausalLM::from_pretrained(const std::string& dir, const torch::Device& device, torch::ScalarType dtype,
                                   WeightFormat format) {
  if (!fs::is_directory(dir)) {
    throw std::runtime_error(fmt::format("{}: model directory not found", dir));
  }
  const auto config_path = (fs::path(dir) / "config.json").string();
  ArchSpec spec;
  try {
    spec = ArchSpec::from_json_file(config_path);
  } catch (const std::invalid_argument& e) {  // a value of the wrong type: name the file
    throw std::runtime_error(fmt::format("{}: {}", config_path, e.what()));
  }
  // Beside a dense checkpoint, the quantized projections a GGUF conversion keeps: read instead
  // of their dense copies under quantize none (as stored); dense loads the copies, and int8 /
  // int4 quantize the copies at load as asked, as for any dense checkpoint.
  io::TensorMap weights;
  const auto quantized_file = fs::path(dir) / kQuantizedWeightsFile;
  std::set<std::string> replaced;
  if (format.bits == 0 && fs::exists(quantized_file)) {
    weights = io::load_safetensors(quantized_file.string());
    // Only the blocks of the model's projections: any other name would stand in for (or drop)
    // the dense file's own tensor.
    std::set<std::string> projections;
    const auto table = spec.weights();
    for (int64_t i = 0; i < spec.num_hidden_layers; ++i) {
      for (const auto& entry : table.layer) {
        if (!is_norm(entry.role) && !is_bias(entry.role)) projections.insert(fmt::format("model.layers.{}.{}", i, entry.name));
      }
    }
    const auto parts = quantized_tensor_names("");
    for (const auto& [name, _] : weights) {
      const auto dot = name.rfind('.');
      const auto part = dot == std::string::npos ? std::string() : name.substr(dot);
      const auto weight = dot == std::string::npos ? name : name.substr(0, dot);
      const bool block_part = std::find(parts.begin(), parts.end(), part) != parts.end();
      if (!block_part || !(projections.count(weight) || projections.count(wrapper_text_weight_name(weight)))) {
        throw std::runtime_error(fmt::format(
            "{}: tensor '{}' is not part of a quantized projection (a projection weight's NAME{}): this file holds "
            "only the projections a conversion kept quantized; a model's other weights belong in its "
            "model.safetensors",
            quantized_file.string(), name, fmt::join(parts, ", NAME")));
      }
      if (part == parts[0]) replaced.insert(weight);
    }
  }
  std::map<std::string, std::string> file_of;
  for (const auto& [name, _] : weights) file_of.emplace(name, quantized_file.string());
  weights.merge(load_weight_files(dir, [&](const std::string& n) { return !replaced.count(n); }, &file_of));
  try {
    return CausalLM(std::move(spec), std::move(weights), device, dtype, format);
  } catch (const BadWeight& e) {  // where more than one file was read, the one that holds it
    std::set<std::string> files;
    for (const auto& [_, file] : file_of) files.insert(file);
    auto it = file_of.find(e.name);
    if (it == file_of.end()) {  // a gemma3 wrapper's text weight, taken under its text model's name
      it = std::find_if(file_of.begin(), file_of.end(),
                        [&](const auto& entry) { return wrapper_text_weight_name(entry.first) == e.name; });
    }
    const bool name_file = files.size() > 1 && it != file_of.end();
    throw std::runtime_error(fmt::format("{}: {}{}", dir, e.what(),
                                         name_file ? fmt::format(" (in {})", fs::path(it->second).filename().string())
                                                   : ""));
  } catch (const std::exception& e) {  // a missing or extra weight: name the model
    throw std::runtime_error(fmt::format("{}: {}", dir, e.what()));
  }
}

CausalLM CausalLM::random(const ArchSpec& s, uint64_t seed, const torch::Device& device, torch::ScalarType dtype,
                          WeightFormat format) {
  s.validate();
  torch::manual_seed(seed);
  io::TensorMap w;
  auto options = torch::TensorOptions().dtype(dtype).device(device);
  auto normal = [&](const std::vector<int64_t>& shape) { return torch::randn(shape, options).mul_(0.02); };
  // Norm gains of 1: Llama stores the gain, Gemma its offset from 1.
  auto unit_gain = [&](const std::vector<int64_t>& shape) {
    return s.norm == NormKind::Gemma ? torch::zeros(shape, options) : torch::ones(shape, options);
  };
  w["model.embed_tokens.weight"] = normal({s.vocab_size, s.hidden_size});
  w["model.norm.weight"] = unit_gain({s.hidden_size});
  if (!s.tie_word_embeddings) w["lm_head.weight"] = normal({s.vocab_size, s.hidden_size});
  for (int64_t i = 0; i < s.num_hidden_layers; ++i) {
    for (const auto& entry : s.weights().layer) {
      const auto shape = s.shape(entry.role);
      w[fmt::format("model.layers.{}.{}", i, entry.name)] = is_norm(entry.role) ? unit_gain(shape) : normal(shape);
    }
  }
  auto spec = s;
  spec.multimodal_wrapper = false;  // the names above are the text model's
  return CausalLM(spec, std::move(w), device, dtype, format);
}

bool CausalLM::quantized() const {
  return std::any_of(layers_.begin(), layers_.end(), [](const DecoderLayer& l) { return !l.quantized.empty(); });
}

int64_t CausalLM::projection_bytes() const {
  int64_t bytes = 0;
  for (const auto& layer : layers_) {
    for (const auto& entry : table_.layer) {
      const auto found = layer.quantized.find(entry.role);
      if (found != layer.quantized.end()) {
        bytes += found->second.bytes();
      } else if (!is_norm(entry.role) && !is_bias(entry.role)) {
        const auto shape = spec_.shape(entry.role);
        bytes += shape[0] * shape[1] * torch::elementSize(dtype_);
      }
    }
  }
  return bytes;
}

std::string CausalLM::hf_module_name(int64_t layer, const std::string& projection) const {
  return spec_.hf_module_name(layer, projection);
}

void CausalLM::attach_adapters(const AdapterOptions& options) {
  const auto& projections = table_.projections;
  const auto targets = spec_.adapter_targets(options.targets);
  int64_t index = 0;
  for (size_t i = 0; i < layers_.size(); ++i) {
    auto& layer = layers_[i];
    for (const auto& name : projections) {
      if (std::find(targets.begin(), targets.end(), name) == targets.end()) continue;
      const auto module = hf_module_name(static_cast<int64_t>(i), name);
      layer.projection(name)->attach_adapter(options.rank_of(module), options.scaling_of(module), options.init_seed,
                                             index++);
    }
    layer.qkv.refresh_adapters();
    layer.gate_up.refresh_adapters();
  }
  apply_lora_a_fold();
  adapter_buffer_ = AdapterBuffer(adapted_layers());
  ++adapter_generation_;
}

bool CausalLM::apply_lora_a_fold() {
  // gate/up stays apart: its term must be in place before the frozen GEMM's epilogue.
  const bool on = fold_lora_a();
  bool made = false;
  const auto fold = [&](auto& projection) {
    const bool was = projection.lora_a_folded();
    made |= projection.fold_lora_a(on) && !was;
  };
  for (auto& layer : layers_) {
    fold(layer.qkv);
    fold(layer.o_proj);
    fold(layer.down_proj);
  }
  return made;
}

std::vector<std::string> CausalLM::lora_a_folded() const {
  std::vector<std::string> names;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const auto& layer = layers_[i];
    for (size_t j = 0; layer.qkv.lora_a_folded() && j < layer.qkv.parts(); ++j) {
      if (layer.qkv.part(j).has_adapter()) names.push_back(layer.qkv.part(j).name());
    }
    for (const auto* p : {&layer.o_proj, &layer.down_proj}) {
      if (p->lora_a_folded()) names.push_back(p->name());
    }
  }
  return names;
}

void CausalLM::set_fold_lora_a(bool on) {
  fold_lora_a_ = on;
  if (apply_lora_a_fold()) ++adapter_generation_;  // W and A live in new storage now
}

int64_t CausalLM::param_index(size_t layer, Role role) const {
  return 1 + static_cast<int64_t>(layer) * static_cast<int64_t>(table_.layer.size()) + offsets_.at(role);
}

int64_t CausalLM::final_norm_index() const { return param_index(layers_.size(), Role::AttnInNorm) - offsets_.at(Role::AttnInNorm); }

bool CausalLM::kernels_apply() const {
#ifdef PRGE_WITH_CUDA
  return layer_kernels_ && device_.is_cuda();
#else
  return false;
#endif
}

bool CausalLM::use_layer_kernels() const {
  // The layer kernels move 16 bytes per access: every row length a multiple of 8 elements
  // (head_dim of 16, so that each RoPE half is too).
  const auto& s = spec_;
  const bool vectorizable = s.head_dim % 16 == 0 && s.hidden_size % 8 == 0 && s.intermediate_size % 8 == 0;
  return kernels_apply() && vectorizable && !at::GradMode::is_enabled();
}

bool CausalLM::gated_kernel_adds_term(const FusedLoraFaProjection& gate_up, const torch::Tensor& h,
                                      const MaterializedPlan* plan) const {
#ifdef PRGE_WITH_CUDA
  // The kernel reads gate's term from A x's first r columns and up's from the last r: two parts,
  // each with its own A. Phi-3's one fused gate_up_proj has a single A whose B spans both halves.
  if (!gated_low_rank_kernel_ || !use_layer_kernels() || gate_up.parts() != 2 || !gate_up.splits_low_rank_term()) {
    return false;
  }
  const int64_t copies = plan && plan->plan->perturbs() ? plan->plan->copies() : 1;
  return cuda::gated_low_rank_supported(dtype_, h.numel() / h.size(-1), spec_.intermediate_size, gate_up.rank(),
                                        copies, spec_.activation);
#else
  (void)gate_up, (void)h, (void)plan;
  return false;
#endif
}

torch::Tensor CausalLM::weight(const torch::Tensor& w, int64_t index, const WeightPerturbation* perturbation,
                               torch::Tensor out) const {
  if (!perturbation || !w.defined()) return w;
  const auto& p = *perturbation;
  if (!out.defined()) out = torch::empty_like(w);
#ifdef PRGE_WITH_CUDA
  if (p.stream->rng() == NoiseRng::Counter && kernels_apply() && !at::GradMode::is_enabled() && w.is_contiguous() &&
      out.is_contiguous()) {
    const cuda::StepKey key{counter_rng::step_key(p.stream->seed(), p.step), p.step_key};
    cuda::perturbed_weight(w, key, index, p.query, p.scale, p.stream->distribution() == NoiseDistribution::Gaussian, out);
    return out;
  }
#endif
  auto z = p.stream->noise(p.step, index, p.query, w.sizes(), w.device());  // float32
  // w + scale * z computed in float32 (type promotion) and rounded once into w's dtype: one
  // pass, written straight where the forward reads it.
  at::add_out(out, w, z, p.scale);
  return out;
}

torch::Tensor CausalLM::layer_tensor(size_t layer, Role role, const WeightPerturbation* perturbation) const {
  const auto& tensors = layers_[layer].tensors;
  const auto found = tensors.find(role);
  if (found == tensors.end()) return {};
  return weight(found->second, param_index(layer, role), perturbation);
}

torch::Tensor CausalLM::dequantize(const QuantizedWeight& weight, torch::Tensor out) const {
#ifdef PRGE_WITH_CUDA
  if (use_layer_kernels()) {
    if (!out.defined()) out = torch::empty({weight.rows, weight.cols}, torch::TensorOptions().dtype(dtype_).device(device_));
    if (cuda::can_dequantize_into(weight, out)) {
      cuda::dequantize_into(weight, out);
      return out;
    }
  }
#endif
  if (!out.defined()) return weight.dequantize(dtype_);
  out.copy_(weight.dequantize(dtype_));
  return out;
}

torch::Tensor CausalLM::projection_weight(size_t layer, Role role, const LoraFaLinear& projection,
                                          const WeightPerturbation* perturbation) const {
  const auto& quantized = layers_[layer].quantized;
  const auto found = quantized.find(role);
  if (found != quantized.end()) return dequantize(found->second);  // MeZO is refused on these
  return perturbation ? weight(projection.weight(), param_index(layer, role), perturbation) : torch::Tensor();
}

std::pair<torch::Tensor, torch::Tensor> CausalLM::group_tensors(size_t layer, const FusedLoraFaProjection& group,
                                                                const std::vector<Role>& weights,
                                                                const std::vector<Role>& biases,
                                                                const WeightPerturbation* perturbation) const {
  const auto& quantized = layers_[layer].quantized;
  if (!quantized.empty() && quantized.count(weights.front())) {
    // Each part dequantized into its rows of one temporary (parts may differ in format: a GGUF
    // stores v_proj with more bits than q_proj), right before the group's GEMM.
    int64_t rows = 0;
    for (size_t j = 0; j < group.parts(); ++j) rows += group.part(j).weight().size(0);
    auto fused = torch::empty({rows, group.part(0).weight().size(1)},
                              torch::TensorOptions().dtype(dtype_).device(device_));
    int64_t offset = 0;
    for (size_t j = 0; j < group.parts(); ++j) {
      const auto& q = quantized.at(weights.at(j));
      dequantize(q, fused.narrow(0, offset, q.rows));
      offset += q.rows;
    }
    return {fused, torch::Tensor()};
  }
  if (!perturbation) return {};
  int64_t rows = 0;
  for (size_t j = 0; j < group.parts(); ++j) rows += group.part(j).weight().size(0);
  const auto& first = group.part(0).weight();
  auto fused = torch::empty({rows, first.size(1)}, first.options());
  torch::Tensor fused_bias;
  if (group.bias().defined()) fused_bias = torch::empty({rows}, first.options());
  int64_t offset = 0;
  for (size_t j = 0; j < group.parts(); ++j) {
    const auto& part = group.part(j);
    const int64_t n = part.weight().size(0);
    weight(part.weight(), param_index(layer, weights.at(j)), perturbation, fused.narrow(0, offset, n));
    if (fused_bias.defined()) {
      weight(part.bias(), param_index(layer, biases.at(j)), perturbation, fused_bias.narrow(0, offset, n));
    }
    offset += n;
  }
  return {fused, fused_bias};
}

torch::Tensor CausalLM::rms_norm(const torch::Tensor& x, const torch::Tensor& w) const {
  if (spec_.norm == NormKind::Gemma) {  // (n(x) * (1 + w)) in float32, rounded once
    auto xf = x.to(torch::kFloat32);
    auto n = xf * torch::rsqrt(xf.pow(2).mean(-1, true) + spec_.rms_norm_eps);
    return (n * (w.to(torch::kFloat32) + 1.0)).to(x.scalar_type());
  }
  // Llama form; one fused ATen kernel (statistics in float32 for half types, as HF's).
  return at::rms_norm(x, {x.size(-1)}, w, spec_.rms_norm_eps);
}

torch::Tensor CausalLM::add_rms_norm(torch::Tensor& x, const torch::Tensor& delta, const torch::Tensor& norm_weight) const {
#ifdef PRGE_WITH_CUDA
  if (use_layer_kernels() && spec_.norm == NormKind::Llama) {
    return cuda::add_rms_norm_(x, delta, norm_weight, spec_.rms_norm_eps);
  }
#endif
  x = x + delta;
  return rms_norm(x, norm_weight);
}

torch::Tensor CausalLM::apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) const {
  const int64_t rd = spec_.rotary_dim();
  if (rd < spec_.head_dim) {  // partial rotation: the first rd dims rotate, the rest pass
    return torch::cat({rotate(x.narrow(-1, 0, rd), cos, sin), x.narrow(-1, rd, spec_.head_dim - rd)}, -1);
  }
#ifdef PRGE_WITH_CUDA
  if (use_layer_kernels() && cos.dim() == 2) return cuda::rope(x, cos, sin);
#endif
  return rotate(x, cos, sin);
}

torch::Tensor CausalLM::embed(const torch::Tensor& ids, const WeightPerturbation* perturbation) const {
  auto x = at::embedding(weight(embed_tokens_, 0, perturbation), ids);
  return spec_.scale_embeddings ? x * embedding_scale_ : x;
}

torch::Tensor CausalLM::attention_block(size_t i, const torch::Tensor& h, const torch::Tensor& cos,
                                        const torch::Tensor& sin, const torch::Tensor& mask,
                                        const MaterializedPlan* plan, const WeightPerturbation* perturbation,
                                        KvCache* cache) const {
  const auto& s = spec_;
  const auto& layer = layers_[i];
  const int64_t n = h.size(0), t = h.size(1), hd = s.head_dim;
  const int64_t q_width = s.num_attention_heads * hd, kv_width = s.num_key_value_heads * hd;
  torch::Tensor qkv;  // [n, t, q + 2 kv]; the group's weight for this forward released once used (see mlp_block)
  {
    const auto [weight, bias] = group_tensors(i, layer.qkv, qkv_roles(), {Role::QBias, Role::KBias, Role::VBias},
                                              perturbation);
    qkv = layer.qkv.forward_fused(h, plan, weight, bias);
  }
  auto q = qkv.narrow(-1, 0, q_width).view({n, t, -1, hd});
  auto k = qkv.narrow(-1, q_width, kv_width).view({n, t, -1, hd});
  auto v = qkv.narrow(-1, q_width + kv_width, kv_width).view({n, t, -1, hd}).transpose(1, 2);
  if (s.qk_norm) {  // per head over head_dim, before RoPE
    q = rms_norm(q, layer_tensor(i, Role::QNorm, perturbation));
    k = rms_norm(k, layer_tensor(i, Role::KNorm, perturbation));
  }
  q = apply_rope(q.transpose(1, 2), cos, sin);
  k = apply_rope(k.transpose(1, 2), cos, sin);
  if (cache) {
    const bool past = cache->keys[i].defined();
    cache->keys[i] = past ? torch::cat({cache->keys[i], k}, 2) : k.contiguous();
    cache->values[i] = past ? torch::cat({cache->values[i], v}, 2) : v.contiguous();
    k = cache->keys[i];
    v = cache->values[i];
  }
  const bool causal = !mask.defined();
  // SDPA's own 1 / sqrt(head_dim) unless the family scales otherwise (Gemma's query_pre_attn_scalar).
  const auto scale = s.query_pre_attn_scalar > 0 ? std::optional<double>(s.attention_scale()) : std::nullopt;
  auto attn = at::scaled_dot_product_attention(q, k, v, mask.defined() ? std::optional<torch::Tensor>(mask) : std::nullopt,
                                               0.0, causal, scale, /*enable_gqa=*/true);
  attn = attn.transpose(1, 2).reshape({n, t, -1});
  return layer.o_proj.forward(attn, plan, projection_weight(i, Role::O, layer.o_proj, perturbation),
                              layer_tensor(i, Role::OBias, perturbation));
}

torch::Tensor CausalLM::mlp_block(size_t i, const torch::Tensor& h, const MaterializedPlan* plan,
                                  const WeightPerturbation* perturbation) const {
  const auto& layer = layers_[i];
  // Each frozen weight made for this forward (dequantized, or perturbed under MeZO) and each
  // intermediate is released as soon as it is used, so at most one of them is held at a time
  // beside the activations: the MLP's peak is what a quantized base adds to the step's memory.
  torch::Tensor gate_up;  // [gate | up]
  FusedLoraFaProjection::LowRankTerm term;  // gate/up's LoRA-FA term, when the activation kernel adds it
  {
    const auto [weight, bias] = group_tensors(i, layer.gate_up, gate_up_roles(), {Role::GateBias, Role::UpBias},
                                              perturbation);
    gate_up = gated_kernel_adds_term(layer.gate_up, h, plan) ? layer.gate_up.forward_frozen(h, plan, term, weight, bias)
                                                             : layer.gate_up.forward_fused(h, plan, weight, bias);
  }
  torch::Tensor activated;
#ifdef PRGE_WITH_CUDA
  if (term.ax.defined()) {
    activated = cuda::gated_low_rank(gate_up, term.ax, term.b_stack, term.scaling, spec_.activation);
    term = {};
    gated_kernel_calls_.value.fetch_add(1, std::memory_order_relaxed);
  } else if (use_layer_kernels() && spec_.activation == Activation::Silu) {
    activated = cuda::swiglu(gate_up);
  }
#endif
  if (!activated.defined()) {
    const int64_t f = spec_.intermediate_size;
    const auto gate = gate_up.narrow(-1, 0, f), up = gate_up.narrow(-1, f, f);
    activated = (spec_.activation == Activation::Silu ? at::silu(gate) : at::gelu(gate, "tanh")) * up;
  }
  gate_up.reset();
  return layer.down_proj.forward(activated, plan, projection_weight(i, Role::Down, layer.down_proj, perturbation),
                                 layer_tensor(i, Role::DownBias, perturbation));
}

torch::Tensor CausalLM::rope_frequencies(int64_t length, int64_t rope) const {
  const auto& r = spec_.ropes.at(static_cast<size_t>(rope));
  return length > r.rescaled_beyond() ? rope_inverse_frequencies(r, spec_.rotary_dim(), length, device_)
                                      : rope_inv_freq_.at(static_cast<size_t>(rope));
}

torch::Tensor CausalLM::hidden_states(const torch::Tensor& input_ids, const MaterializedPlan* plan,
                                      const WeightPerturbation* perturbation) const {
  if (input_ids.dim() != 2 || input_ids.scalar_type() != torch::kInt64) {
    throw std::invalid_argument(fmt::format(
        "input_ids must be a 2-D int64 tensor [batch, seq], got {}-D {}", input_ids.dim(),
        c10::toString(input_ids.scalar_type())));
  }
  const int64_t t = input_ids.size(1);
  auto positions = torch::arange(t, torch::TensorOptions().dtype(torch::kInt64).device(device_));
  std::vector<RopeTables> tables;  // [t, rotary_dim] per RoPE set, sin sign-folded (see rotate)
  for (size_t r = 0; r < spec_.ropes.size(); ++r) {
    tables.push_back(rope_tables(rope_frequencies(t, static_cast<int64_t>(r)), spec_.ropes[r].attention_factor,
                                 positions, dtype_));
  }
  // A sliding window shorter than the sequence needs an explicit mask (keys j with 0 <= i - j < W).
  std::map<int64_t, torch::Tensor> window_masks;
  for (int64_t i = 0; i < spec_.num_hidden_layers; ++i) {
    const auto window = spec_.attention(i).window;
    if (window > 0 && window < t && !window_masks.count(window)) {
      const auto distance = positions.unsqueeze(1) - positions.unsqueeze(0);  // i - j
      window_masks[window] = (distance >= 0) & (distance < window);
    }
  }
  // x: the residual stream; h: the normalized input of the next block. Each block's output is
  // added to x and normalized for the next block in one step (one kernel on CUDA).
  auto ids = input_ids.to(device_);
  auto x = embed(ids, perturbation);
  auto h = rms_norm(x, layer_tensor(0, Role::AttnInNorm, perturbation));
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (plan) plan->prepare_copies(layers_[i].copy_requests(), dtype_);  // the layer's B copies, one kernel
    const auto attention = spec_.attention(static_cast<int64_t>(i));
    const auto& rope = tables.at(static_cast<size_t>(attention.rope));
    const auto found = window_masks.find(attention.window);
    auto a = attention_block(i, h, rope.cos, rope.sin, found != window_masks.end() ? found->second : torch::Tensor(),
                             plan, perturbation, nullptr);
    if (spec_.sandwich_norms) a = rms_norm(a, layer_tensor(i, Role::AttnOutNorm, perturbation));
    h = add_rms_norm(x, a, layer_tensor(i, Role::MlpInNorm, perturbation));
    auto m = mlp_block(i, h, plan, perturbation);
    if (spec_.sandwich_norms) m = rms_norm(m, layer_tensor(i, Role::MlpOutNorm, perturbation));
    const bool last = i + 1 == layers_.size();
    const auto next_norm = last ? weight(final_norm_, final_norm_index(), perturbation)
                                : layer_tensor(i + 1, Role::AttnInNorm, perturbation);
    h = add_rms_norm(x, m, next_norm);
  }
  return h;
}

torch::Tensor CausalLM::forward_cached(const torch::Tensor& input_ids, const torch::Tensor& positions,
                                       const torch::Tensor& key_mask, KvCache& cache) const {
  const int64_t n = input_ids.size(0), t = input_ids.size(1);
  const int64_t past = cache.length(), total = past + t;
  if (key_mask.size(0) != n || key_mask.size(1) != total) {
    throw std::invalid_argument(fmt::format("forward_cached: key_mask must be [{}, {}]", n, total));
  }
  if (cache.keys.empty()) cache.keys.resize(layers_.size()), cache.values.resize(layers_.size());
  // RoPE at each row's own positions: [N, 1, t, rotary_dim]. The length dynamic / longrope
  // RoPE depend on is this call's, 1 + its largest position (as transformers computes it).
  const auto device_positions = positions.to(device_, torch::kInt64);
  std::vector<RopeTables> tables;
  for (size_t r = 0; r < spec_.ropes.size(); ++r) {
    int64_t length = 0;
    if (spec_.ropes[r].rescaled_beyond() < std::numeric_limits<int64_t>::max() && device_positions.numel()) {
      length = device_positions.max().item<int64_t>() + 1;
    }
    auto tab = rope_tables(rope_frequencies(length, static_cast<int64_t>(r)), spec_.ropes[r].attention_factor,
                           device_positions, dtype_);
    tables.push_back({tab.cos.unsqueeze(1), tab.sin.unsqueeze(1)});
  }
  // Query a (absolute position past + a) sees real keys up to itself (within the layer's
  // window), and always itself (so a padding query has one key and no all-masked row).
  auto key_index = torch::arange(total, torch::TensorOptions().dtype(torch::kInt64).device(device_));
  auto query_index = key_index.narrow(0, past, t).unsqueeze(1);
  auto visible = key_mask.to(device_, torch::kBool).unsqueeze(1) & (key_index.unsqueeze(0) <= query_index).unsqueeze(0);
  auto itself = (key_index.unsqueeze(0) == query_index).unsqueeze(0);
  std::map<int64_t, torch::Tensor> masks;  // by window; [N, 1, t, total]
  for (int64_t i = 0; i < spec_.num_hidden_layers; ++i) {
    const auto window = spec_.attention(i).window;
    if (masks.count(window)) continue;
    auto m = visible;
    if (window > 0) m = m & (key_index.unsqueeze(0) > query_index - window).unsqueeze(0);
    masks[window] = (m | itself).unsqueeze(1);
  }
  auto x = embed(input_ids.to(device_), nullptr);
  for (size_t i = 0; i < layers_.size(); ++i) {
    const auto attention = spec_.attention(static_cast<int64_t>(i));
    const auto& rope = tables.at(static_cast<size_t>(attention.rope));
    auto a = attention_block(i, rms_norm(x, layers_[i].tensors.at(Role::AttnInNorm)), rope.cos, rope.sin,
                             masks.at(attention.window), nullptr, nullptr, &cache);
    if (spec_.sandwich_norms) a = rms_norm(a, layers_[i].tensors.at(Role::AttnOutNorm));
    x = x + a;
    auto m = mlp_block(i, rms_norm(x, layers_[i].tensors.at(Role::MlpInNorm)), nullptr, nullptr);
    if (spec_.sandwich_norms) m = rms_norm(m, layers_[i].tensors.at(Role::MlpOutNorm));
    x = x + m;
  }
  return rms_norm(x, final_norm_);
}

torch::Tensor CausalLM::project_to_vocab(const torch::Tensor& hidden_rows, const WeightPerturbation* perturbation) const {
  // Tied: the embedding's own perturbation (one parameter); untied: lm_head is the last one.
  const int64_t index = spec_.tie_word_embeddings ? 0 : final_norm_index() + 1;
  auto logits = at::linear(hidden_rows, weight(lm_head_, index, perturbation)).to(torch::kFloat32);
  if (spec_.final_logit_softcapping > 0) {
    const double cap = spec_.final_logit_softcapping;
    logits = torch::tanh(logits / cap) * cap;
  }
  return logits;
}

torch::Tensor CausalLM::logits(const torch::Tensor& input_ids) const { return project_to_vocab(hidden_states(input_ids)); }

std::vector<LoraFaLinear*> CausalLM::adapted_layers() {
  std::vector<LoraFaLinear*> out;
  for (auto& layer : layers_) {
    for (const auto& name : table_.projections) {
      auto* proj = layer.projection(name);
      if (proj && proj->has_adapter()) out.push_back(proj);
    }
  }
  return out;
}

std::vector<ZoParameter> CausalLM::adapter_parameters() {
  std::vector<ZoParameter> out;
  for (auto* layer : adapted_layers()) {
    out.push_back({layer->lora_b(), layer->param_index(), NoiseLayout::Block, layer->name() + ".lora_b"});
  }
  return out;
}

std::vector<ZoParameter> CausalLM::full_parameters() {
  std::vector<ZoParameter> out;
  auto add = [&](torch::Tensor& t, const std::string& name) {
    out.push_back({t, static_cast<int64_t>(out.size()), NoiseLayout::PerQuery, name});
  };
  add(embed_tokens_, "model.embed_tokens.weight");
  for (size_t i = 0; i < layers_.size(); ++i) {
    auto& layer = layers_[i];
    for (const auto& entry : table_.layer) {
      const auto name = fmt::format("model.layers.{}.{}", i, entry.name);
      if (layer.tensors.count(entry.role)) {
        add(layer.tensors[entry.role], name);
        continue;
      }
      const auto found = layer.quantized.find(entry.role);
      if (found != layer.quantized.end()) {  // a dense copy: MeZO (which would update it) is refused here
        auto dense = found->second.dequantize(dtype_);
        add(dense, name);
        continue;
      }
      const auto module = entry.name.substr(0, entry.name.rfind('.'));
      add(layer.projection(module.substr(module.rfind('.') + 1))->mutable_weight(), name);
    }
  }
  add(final_norm_, "model.norm.weight");
  if (!spec_.tie_word_embeddings) add(lm_head_, "lm_head.weight");
  return out;
}

}  // namespace prge

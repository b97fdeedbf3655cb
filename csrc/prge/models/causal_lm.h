#pragma once
// The model seam: one decoder-only causal LM that every estimator, the trainer, generation,
// checkpoints and the bindings use. What differs between families (Llama, Mistral, Qwen2,
// Qwen3, Gemma 3, Phi-3) is data in its ArchSpec (models/arch.h), read from config.json by the
// family registry (models/families.cpp): biases, norm form, q/k norms, activation, embedding
// scale, sliding windows and RoPE per layer, fused checkpoint tensors. Weights use the Hugging
// Face names of the family's table and load from safetensors; every projection is a
// LoraFaLinear, so LoRA-FA adapters can sit on any of them.
#include "prge/adapter_buffer.h"
#include "prge/adapter_options.h"
#include "prge/fused_projection.h"
#include "prge/io/safetensors.h"
#include "prge/lora_fa_linear.h"
#include "prge/models/arch.h"
#include "prge/perturbation.h"
#include "prge/quantized_weight.h"

#include <torch/torch.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace prge {

// Full-parameter MeZO's perturbation, applied inside the forward: each weight w is used as
// w + scale * z(step, param, query), formed as a temporary one layer at a time (z regenerated
// from the seed, added in float32, rounded once to the model dtype). The stored weights are
// never perturbed, so no restore can drift in bf16 / fp16. With the counter RNG on a CUDA
// device (layer kernels on) one kernel draws z and writes w + scale * z; `step_key`, when
// defined ([1] int64 on the device, counter_rng::step_key(seed, step)), is where that kernel
// reads the step's key, so that a CUDA graph of the forward serves every step.
struct WeightPerturbation {
  const PerturbationStream* stream = nullptr;
  int64_t step = 0;
  int64_t query = 0;
  double scale = 0.0;
  torch::Tensor step_key;
};

// Keys and values of every layer for incremental decoding: [N, kv_heads, length, head_dim].
struct KvCache {
  std::vector<torch::Tensor> keys, values;
  int64_t length() const { return keys.empty() ? 0 : keys.front().size(2); }
};

// How the frozen projection weights are held: as stored (bits 0: dense, or the quantized
// tensors a checkpoint holds), dense (kDense: a checkpoint's quantized weights dequantized at
// load), or quantized at load to int8 (one scale per output channel when group_size is 0) /
// int4 (group-wise, asymmetric), round to nearest.
// A GGUF conversion's quantized projection weights (NAME.qweight / .scales / .offsets / .format),
// written beside its dense, Hugging Face loadable model.safetensors.
inline constexpr const char* kQuantizedWeightsFile = "prge_quantized.safetensors";

struct WeightFormat {
  static constexpr int64_t kDense = -1;  // dequantize a checkpoint's own quantized weights at load
  int64_t bits = 0;
  int64_t group_size = 0;
};

// model.quantize's word (none | dense | int8 | int4) and model.group_size as a WeightFormat
// (int4 in groups of 64 unless told); std::invalid_argument for any other word.
WeightFormat weight_format(const std::string& quantize, int64_t group_size);

struct DecoderLayer {
  std::map<Role, torch::Tensor> tensors;  // norms and biases of the layer, by role
  std::map<Role, QuantizedWeight> quantized;  // projection weights kept quantized, by role
  FusedLoraFaProjection qkv;      // q_proj, k_proj, v_proj (or Phi-3's qkv_proj): one GEMM
  LoraFaLinear o_proj;
  FusedLoraFaProjection gate_up;  // gate_proj, up_proj (or gate_up_proj): one GEMM
  LoraFaLinear down_proj;
  // The projection a family names `name` (q_proj, qkv_proj, ...), or null.
  LoraFaLinear* projection(const std::string& name);
  // The copy stacks of the adapted projections, in the order the forward uses them.
  std::vector<CopyStackRequest> copy_requests() const;
};

class CausalLM {
 public:
  CausalLM(ArchSpec spec, io::TensorMap weights, const torch::Device& device, torch::ScalarType dtype,
           WeightFormat format = {});
  // Reads config.json and model.safetensors (or model-*.safetensors shards) from `dir`.
  static CausalLM from_pretrained(const std::string& dir, const torch::Device& device, torch::ScalarType dtype,
                                  WeightFormat format = {});
  // Random weights at a real shape (speed benchmarks: speed does not depend on values).
  static CausalLM random(const ArchSpec& spec, uint64_t seed, const torch::Device& device, torch::ScalarType dtype,
                         WeightFormat format = {});
  // Whether projection weights are kept quantized (then full-parameter MeZO is refused).
  bool quantized() const;
  // Bytes the frozen projection weights take as held (quantized or dense).
  int64_t projection_bytes() const;

  // Attaches LoRA-FA adapters to the targeted projections (options.targets, resolved for the
  // family: Phi-3's qkv_proj when q_proj, k_proj and v_proj are all named). Throws
  // std::invalid_argument naming a target the family has no projection for.
  void attach_adapters(const AdapterOptions& options);
  // attach_adapters calls so far: a Trainer made before the last one holds state (optimizer
  // slots, captured CUDA graphs) of adapters that are gone.
  int64_t adapter_generation() const { return adapter_generation_; }

  // ids: [N, T] int64 (right-padded). Returns the final-normed hidden states [N, T, d].
  torch::Tensor hidden_states(const torch::Tensor& input_ids, const MaterializedPlan* plan = nullptr,
                              const WeightPerturbation* perturbation = nullptr) const;
  // Logits (float32) for selected hidden rows [M, d] -> [M, V]; only answer positions
  // are ever projected during training, which skips most of the vocabulary GEMM.
  torch::Tensor project_to_vocab(const torch::Tensor& hidden_rows,
                                 const WeightPerturbation* perturbation = nullptr) const;
  torch::Tensor logits(const torch::Tensor& input_ids) const;
  // Incremental forward for generation (unperturbed; adapters applied): ids [N, t] at RoPE
  // positions [N, t], attending to the cache and to themselves causally (within each layer's
  // window); key_mask [N, cache.length() + t] is false at padding, which no real token attends
  // to. Appends this call's keys and values to `cache`; returns the final-normed hidden states
  // [N, t, d].
  torch::Tensor forward_cached(const torch::Tensor& input_ids, const torch::Tensor& positions,
                               const torch::Tensor& key_mask, KvCache& cache) const;

  std::vector<ZoParameter> adapter_parameters();  // LoRA-FA B matrices (Block noise layout)
  // Every B of the model in one flat float32 buffer (the lora_b tensors are views of it).
  const AdapterBuffer& adapter_buffer() const { return adapter_buffer_; }
  // Every weight, for full-parameter MeZO, in the family table's order (embedding, each
  // layer's tensors, final norm, untied lm_head): the order is part of every z's seed.
  std::vector<ZoParameter> full_parameters();
  std::vector<LoraFaLinear*> adapted_layers();
  // The Hugging Face module name of a layer's projection (model.layers.N.self_attn.q_proj).
  std::string hf_module_name(int64_t layer, const std::string& projection) const;

  // Fused CUDA kernels for RoPE, SwiGLU and residual add + RMSNorm (CUDA build, CUDA device,
  // no autograd, where the spec's norm and activation are the kernels'); off: the ATen path
  // they replace (tests compare the two).
  void set_layer_kernels(bool enabled) { layer_kernels_ = enabled; }
  bool layer_kernels() const { return layer_kernels_; }
  // Within the layer kernels, gate/up's LoRA-FA term added inside the gated activation (a Triton
  // kernel compiled ahead of time: cuda/gated_low_rank.h) where a compiled variant fits (bf16 /
  // fp16, rank 16 / 32 / 64, SiLU or GELU-tanh, gate and up separate projections; on by default:
  // 0.96-1.00x the step on an H200, experiments/results/NOTES.md); off: the term's batched GEMM
  // into the frozen output, then the activation.
  void set_gated_low_rank_kernel(bool enabled) { gated_low_rank_kernel_ = enabled; }
  bool gated_low_rank_kernel() const { return gated_low_rank_kernel_; }
  // How many MLP blocks took the gated low-rank kernel since the model was made: a CUDA graph's
  // capture counts, its replays do not, so > 0 says the kernel ran, not how often.
  int64_t gated_low_rank_kernel_calls() const { return gated_kernel_calls_.value.load(std::memory_order_relaxed); }
  // A stacked under W for o, down and q/k/v (LoraFaLinear::fold_lora_a: one GEMM reads x once
  // for x Wᵀ and A x). Off by default until a GPU measures it (the wider GEMM may lose to tile
  // rounding what it saves in reads). Folding makes new storage for W and A, so a Trainer made
  // before refuses to step (as after attach_adapters).
  void set_fold_lora_a(bool on);
  bool fold_lora_a() const { return fold_lora_a_; }
  // The adapted projections whose A is folded now, as layers.N.o_proj.
  std::vector<std::string> lora_a_folded() const;
  // True where prge's CUDA kernels may serve this model's forwards (layer_kernels() on, CUDA
  // build and device); without autograd, MeZO's perturbed weights then come from one kernel
  // each under the counter RNG, whatever the shapes.
  bool kernels_apply() const;
  // The fused layer kernels for this forward: kernels_apply(), no autograd recording, and row
  // lengths the 16-byte vectorized kernels take.
  bool use_layer_kernels() const;
  // Whether the gated activation kernel adds gate/up's LoRA-FA term for this forward of `h`
  // (use_layer_kernels(), gate and up two parts adapted alike, a compiled variant that fits).
  bool gated_kernel_adds_term(const FusedLoraFaProjection& gate_up, const torch::Tensor& h,
                              const MaterializedPlan* plan) const;
  // Folds or unfolds o, down and q/k/v as fold_lora_a() says; true when any fold made new storage.
  bool apply_lora_a_fold();

  const ArchSpec& spec() const { return spec_; }
  const torch::Device& device() const { return device_; }
  torch::ScalarType dtype() const { return dtype_; }
  // RoPE inverse frequencies [rotary_dim / 2] float32 on the model's device of RoPE set
  // `rope` for a forward of `length` positions (short forwards' are computed once, at load).
  torch::Tensor rope_frequencies(int64_t length, int64_t rope = 0) const;

 private:
  // Attention and MLP take the normalized residual stream h and return what is added to it.
  // `cos` / `sin`: the RoPE tables of the layer's set; `mask`: true where a query attends
  // (undefined: causal); `cache`: incremental decoding.
  torch::Tensor attention_block(size_t layer, const torch::Tensor& h, const torch::Tensor& cos, const torch::Tensor& sin,
                                const torch::Tensor& mask, const MaterializedPlan* plan,
                                const WeightPerturbation* perturbation, KvCache* cache) const;
  torch::Tensor mlp_block(size_t layer, const torch::Tensor& h, const MaterializedPlan* plan,
                          const WeightPerturbation* perturbation) const;
  torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight) const;
  // x += delta, then RMSNorm(x): one kernel on CUDA (Llama norm form, in place on x), else
  // ATen (x rebound to a new tensor, autograd-safe).
  torch::Tensor add_rms_norm(torch::Tensor& x, const torch::Tensor& delta, const torch::Tensor& norm_weight) const;
  torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) const;
  // w itself, or w + scale * z of parameter `index` (full_parameters() order) as a temporary
  // (written into `out` when given).
  torch::Tensor weight(const torch::Tensor& w, int64_t index, const WeightPerturbation* perturbation,
                       torch::Tensor out = {}) const;
  // A layer tensor by role, perturbed under MeZO (undefined when the layer has none).
  torch::Tensor layer_tensor(size_t layer, Role role, const WeightPerturbation* perturbation) const;
  // A quantized weight dense in the model's dtype, written into `out` when given (else a new
  // tensor): one fused kernel on the GPU with the layer kernels on, ATen's ops otherwise.
  torch::Tensor dequantize(const QuantizedWeight& weight, torch::Tensor out = {}) const;
  // A projection's frozen weight for this forward: dequantized when kept quantized, perturbed
  // under MeZO, else undefined (the projection's own).
  torch::Tensor projection_weight(size_t layer, Role role, const LoraFaLinear& projection,
                                  const WeightPerturbation* perturbation) const;
  // A fused group's weight and bias: dequantized part by part into one [sum out, in] tensor when
  // kept quantized, perturbed part by part under MeZO, else undefined.
  std::pair<torch::Tensor, torch::Tensor> group_tensors(size_t layer, const FusedLoraFaProjection& group,
                                                        const std::vector<Role>& weights,
                                                        const std::vector<Role>& biases,
                                                        const WeightPerturbation* perturbation) const;
  int64_t param_index(size_t layer, Role role) const;  // in full_parameters() order
  int64_t final_norm_index() const;
  torch::Tensor embed(const torch::Tensor& ids, const WeightPerturbation* perturbation) const;
  std::vector<Role> qkv_roles() const;
  std::vector<Role> gate_up_roles() const;

  ArchSpec spec_;
  WeightTable table_;
  std::map<Role, int64_t> offsets_;  // role -> position in a layer's part of the parameter order
  torch::Device device_;
  torch::ScalarType dtype_;
  torch::Tensor embed_tokens_;
  torch::Tensor final_norm_;
  torch::Tensor lm_head_;  // aliases embed_tokens_ when tied
  double embedding_scale_ = 1.0;
  std::vector<DecoderLayer> layers_;
  std::vector<torch::Tensor> rope_inv_freq_;  // per RoPE set
  AdapterBuffer adapter_buffer_;
  int64_t adapter_generation_ = 0;
  bool fold_lora_a_ = false;
  bool layer_kernels_ = true;
  bool gated_low_rank_kernel_ = true;
  struct Counter {  // bumped by const forwards, on any thread; a copy starts from the value copied
    std::atomic<int64_t> value{0};
    Counter() = default;
    Counter(const Counter& other) : value(other.value.load()) {}
    Counter& operator=(const Counter& other) {
      value = other.value.load();
      return *this;
    }
  };
  mutable Counter gated_kernel_calls_;
};

torch::ScalarType parse_dtype(const std::string& name);
std::string dtype_name(torch::ScalarType dtype);

}  // namespace prge

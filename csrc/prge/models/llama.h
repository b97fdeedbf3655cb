#pragma once
// Native decoder-only transformer of the Llama family (RMSNorm, RoPE, GQA, SwiGLU):
// covers TinyLlama, Llama-2 and SmolLM2. Weights use the Hugging Face names and load
// from safetensors; every projection is a LoraFaLinear so adapters can sit on any of them.
#include "prge/adapter_buffer.h"
#include "prge/fused_projection.h"
#include "prge/io/safetensors.h"
#include "prge/lora_fa_linear.h"
#include "prge/models/rope.h"
#include "prge/perturbation.h"

#include <torch/torch.h>

#include <string>
#include <vector>

namespace prge {

struct LlamaConfig {
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  double rms_norm_eps = 1e-5;
  int64_t max_position_embeddings = 2048;  // transformers' LlamaConfig default
  RopeParameters rope;
  bool tie_word_embeddings = false;

  // Parses a Hugging Face config.json. Every key is either read, known not to change the
  // forward (generation defaults, token ids, bookkeeping), or refused by name: nothing that
  // changes the logits is ignored.
  static LlamaConfig from_json_file(const std::string& path);
  void validate() const;
  int64_t parameter_count() const;
};

// The seven projections LoRA-FA may target, in parameter order.
const std::vector<std::string>& projection_names();

// LoRA settings in PEFT's terms (peft.LoraConfig): the scaling of a module is alpha / rank,
// or alpha / sqrt(rank) with use_rslora (Kalajdzievski 2023, rsLoRA); rank_pattern and
// alpha_pattern override rank and alpha for the modules whose Hugging Face name
// (model.layers.N.self_attn.q_proj) matches a key as PEFT matches it, `(.*\.)?(KEY)$`, the
// first matching key in order winning.
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

// Full-parameter MeZO's perturbation, applied inside the forward: each weight w is used as
// w + scale * z(step, param, query), formed as a temporary one layer at a time (z regenerated
// from the seed, added in float32, rounded once to the model dtype). The stored weights are
// never perturbed, so no restore can drift in bf16 / fp16.
struct WeightPerturbation {
  const PerturbationStream* stream = nullptr;
  int64_t step = 0;
  int64_t query = 0;
  double scale = 0.0;
};

// Keys and values of every layer for incremental decoding: [N, kv_heads, length, head_dim].
struct KvCache {
  std::vector<torch::Tensor> keys, values;
  int64_t length() const { return keys.empty() ? 0 : keys.front().size(2); }
};

struct LlamaLayer {
  torch::Tensor input_norm;
  torch::Tensor post_attention_norm;
  FusedLoraFaProjection qkv;      // q_proj, k_proj, v_proj: one GEMM
  LoraFaLinear o_proj;
  FusedLoraFaProjection gate_up;  // gate_proj, up_proj: one GEMM
  LoraFaLinear down_proj;
  LoraFaLinear& projection(const std::string& name);
  // The copy stacks of the adapted projections, in the order the forward uses them.
  std::vector<CopyStackRequest> copy_requests() const;
};

class LlamaModel {
 public:
  LlamaModel(LlamaConfig config, io::TensorMap weights, const torch::Device& device,
             torch::ScalarType dtype);
  // Reads config.json and model.safetensors (or model-*.safetensors shards) from `dir`.
  static LlamaModel from_pretrained(const std::string& dir, const torch::Device& device,
                                    torch::ScalarType dtype);
  // Random weights at a real shape (speed benchmarks: speed does not depend on values).
  static LlamaModel random(const LlamaConfig& config, uint64_t seed, const torch::Device& device,
                           torch::ScalarType dtype);

  void attach_adapters(const AdapterOptions& options);

  // ids: [N, T] int64 (right-padded). Returns the final-normed hidden states [N, T, d].
  torch::Tensor hidden_states(const torch::Tensor& input_ids, const MaterializedPlan* plan = nullptr,
                              const WeightPerturbation* perturbation = nullptr) const;
  // Logits (float32) for selected hidden rows [M, d] -> [M, V]; only answer positions
  // are ever projected during training, which skips most of the vocabulary GEMM.
  torch::Tensor project_to_vocab(const torch::Tensor& hidden_rows,
                                 const WeightPerturbation* perturbation = nullptr) const;
  torch::Tensor logits(const torch::Tensor& input_ids) const;
  // Incremental forward for generation (unperturbed; adapters applied): ids [N, t] at RoPE
  // positions [N, t], attending to the cache and to themselves causally; key_mask [N,
  // cache.length() + t] is false at padding, which no real token attends to. Appends this
  // call's keys and values to `cache`; returns the final-normed hidden states [N, t, d].
  torch::Tensor forward_cached(const torch::Tensor& input_ids, const torch::Tensor& positions,
                               const torch::Tensor& key_mask, KvCache& cache) const;

  std::vector<ZoParameter> adapter_parameters();  // LoRA-FA B matrices (Block noise layout)
  // Every B of the model in one flat float32 buffer (the lora_b tensors are views of it).
  const AdapterBuffer& adapter_buffer() const { return adapter_buffer_; }
  std::vector<ZoParameter> full_parameters();     // every weight, for full-parameter MeZO
  // The Hugging Face module name of a layer's projection (model.layers.N.self_attn.q_proj).
  static std::string hf_module_name(size_t layer, const std::string& projection);
  std::vector<LoraFaLinear*> adapted_layers();

  // Fused CUDA kernels for RoPE, SwiGLU and residual add + RMSNorm (CUDA build, CUDA device, no autograd); off: the
  // ATen path they replace (tests compare the two).
  void set_layer_kernels(bool enabled) { layer_kernels_ = enabled; }
  bool layer_kernels() const { return layer_kernels_; }

  const LlamaConfig& config() const { return config_; }
  // RoPE inverse frequencies [head_dim / 2] float32 on the model's device for a forward of
  // `length` positions (the frequencies of short forwards are computed once, at load).
  torch::Tensor rope_frequencies(int64_t length) const;
  const torch::Device& device() const { return device_; }
  torch::ScalarType dtype() const { return dtype_; }

 private:
  // Both blocks take the RMS-normalized residual stream h and return what is added to it.
  torch::Tensor attention_block(size_t layer_index, const torch::Tensor& h, const torch::Tensor& cos,
                                const torch::Tensor& sin, const MaterializedPlan* plan,
                                const WeightPerturbation* perturbation) const;
  torch::Tensor mlp_block(size_t layer_index, const torch::Tensor& h, const MaterializedPlan* plan,
                          const WeightPerturbation* perturbation) const;
  // x += delta, then RMSNorm(x) with norm_weight: one kernel on CUDA (in place on x), else
  // ATen (x rebound to a new tensor, autograd-safe).
  torch::Tensor add_rms_norm(torch::Tensor& x, const torch::Tensor& delta, const torch::Tensor& norm_weight) const;
  // w itself, or w + scale * z of parameter `index` (full_parameters() order) as a temporary
  // (written into `out` when given).
  torch::Tensor weight(const torch::Tensor& w, int64_t index, const WeightPerturbation* perturbation,
                       torch::Tensor out = {}) const;
  // A fused group's perturbed weight [sum out, in], each part written in place (no cat).
  torch::Tensor group_weight(const FusedLoraFaProjection& group, std::vector<int64_t> indices,
                             const WeightPerturbation* perturbation) const;

  LlamaConfig config_;
  torch::Device device_;
  torch::ScalarType dtype_;
  torch::Tensor embed_tokens_;
  torch::Tensor final_norm_;
  torch::Tensor lm_head_;  // aliases embed_tokens_ when tied
  std::vector<LlamaLayer> layers_;
  torch::Tensor rope_inv_freq_;
  AdapterBuffer adapter_buffer_;
  bool layer_kernels_ = true;
  bool use_layer_kernels() const;
};

torch::ScalarType parse_dtype(const std::string& name);
std::string dtype_name(torch::ScalarType dtype);

}  // namespace prge

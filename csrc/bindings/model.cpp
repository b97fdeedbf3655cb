#include "prge/generation.h"
#include "prge/estimators/prge_estimator.h"
#include "prge/models/causal_lm.h"
#include "prge/models/weight_files.h"
#include "prge/token_batch.h"

#include <torch/extension.h>

namespace py = pybind11;

namespace prge::bindings {

void bind_model(py::module_& m) {
  m.attr("IGNORE_INDEX") = kIgnoreIndex;  // target value of positions that are not scored
  m.attr("QUANTIZED_WEIGHTS_FILE") = kQuantizedWeightsFile;  // a conversion's quantized projections
  m.attr("PROJECTIONS") = py::tuple(py::cast(projection_names()));  // adapter targets, layer order
  py::class_<RopeParameters>(m, "RopeParameters", "RoPE variant and its parameters, as read from config.json")
      .def(py::init<>())
      .def_property_readonly("type", [](const RopeParameters& r) { return to_string(r.type); })
      .def_readwrite("theta", &RopeParameters::theta)
      .def_readonly("factor", &RopeParameters::factor)
      .def_readonly("original_max_position_embeddings", &RopeParameters::original_max_position_embeddings)
      .def_readonly("attention_factor", &RopeParameters::attention_factor);

  py::class_<ArchSpec>(m, "ArchSpec",
                       "A decoder's architecture as its config.json gives it (from_json_file reads it the way "
                       "transformers' config class of the model_type does; supported_model_types lists them). "
                       "The fields keep config.json's names and meanings; the ones config.json does not name "
                       "say how the family computes (qk_norm: RMSNorm on q and k per head; sandwich_norms: norms "
                       "on the attention and MLP outputs, Gemma 3; scale_embeddings: embeddings times "
                       "sqrt(hidden_size) rounded to the dtype, Gemma; fused_checkpoint: q/k/v and gate/up stored "
                       "as one tensor each, Phi-3; norm 'llama' w·x̂ or 'gemma' (1 + w)·x̂). from_json_file raises "
                       "ValueError naming a key it refuses or a value of the wrong type")
      .def(py::init<>())
      .def_readwrite("vocab_size", &ArchSpec::vocab_size)
      .def_readwrite("hidden_size", &ArchSpec::hidden_size)
      .def_readwrite("intermediate_size", &ArchSpec::intermediate_size)
      .def_readwrite("num_hidden_layers", &ArchSpec::num_hidden_layers)
      .def_readwrite("num_attention_heads", &ArchSpec::num_attention_heads)
      .def_readwrite("num_key_value_heads", &ArchSpec::num_key_value_heads)
      .def_readwrite("head_dim", &ArchSpec::head_dim)
      .def_readwrite("rms_norm_eps", &ArchSpec::rms_norm_eps)
      .def_readwrite("max_position_embeddings", &ArchSpec::max_position_embeddings)
      .def_readwrite("tie_word_embeddings", &ArchSpec::tie_word_embeddings)
      .def_readwrite("model_type", &ArchSpec::model_type)
      .def_readwrite("qkv_bias", &ArchSpec::qkv_bias)
      .def_readwrite("o_bias", &ArchSpec::o_bias)
      .def_readwrite("mlp_bias", &ArchSpec::mlp_bias)
      .def_readwrite("qk_norm", &ArchSpec::qk_norm)
      .def_readwrite("sandwich_norms", &ArchSpec::sandwich_norms)
      .def_readwrite("scale_embeddings", &ArchSpec::scale_embeddings)
      .def_readwrite("fused_checkpoint", &ArchSpec::fused_checkpoint)
      .def_readwrite("query_pre_attn_scalar", &ArchSpec::query_pre_attn_scalar)
      .def_readwrite("final_logit_softcapping", &ArchSpec::final_logit_softcapping)
      .def_readwrite("partial_rotary_factor", &ArchSpec::partial_rotary_factor)
      .def_property("norm", [](const ArchSpec& s) { return s.norm == NormKind::Gemma ? "gemma" : "llama"; },
                    [](ArchSpec& s, const std::string& v) {
                      if (v != "gemma" && v != "llama") throw std::invalid_argument("norm: llama or gemma");
                      s.norm = v == "gemma" ? NormKind::Gemma : NormKind::Llama;
                    })
      .def_property("activation",
                    [](const ArchSpec& s) { return s.activation == Activation::Silu ? "silu" : "gelu_pytorch_tanh"; },
                    [](ArchSpec& s, const std::string& v) {
                      if (v != "silu" && v != "gelu_pytorch_tanh") throw std::invalid_argument("activation: silu or gelu_pytorch_tanh");
                      s.activation = v == "silu" ? Activation::Silu : Activation::GeluTanh;
                    })
      .def_property("rope", [](const ArchSpec& s) { return s.ropes.at(0); },
                    [](ArchSpec& s, const RopeParameters& r) { s.ropes.at(0) = r; },
                    "the RoPE of full-attention layers (ropes[0])")
      .def_readonly("ropes", &ArchSpec::ropes)
      .def_property_readonly("layers", [](const ArchSpec& s) {
        py::list out;
        for (int64_t i = 0; i < s.num_hidden_layers; ++i) out.append(py::make_tuple(s.attention(i).window, s.attention(i).rope));
        return out;
      }, "(sliding window or 0, RoPE set) per layer")
      .def_property_readonly("layer_weight_names", [](const ArchSpec& s) {
        std::vector<std::string> names;
        for (const auto& e : s.weights().layer) names.push_back(e.name);
        return names;
      }, "a layer's checkpoint names (after model.layers.N.), in MeZO's parameter order")
      .def_property_readonly("projections", [](const ArchSpec& s) { return s.weights().projections; },
                             "the projections LoRA-FA may target, in adapter order")
      .def_readonly("multimodal_wrapper", &ArchSpec::multimodal_wrapper,
                    "the text model of a multimodal wrapper's checkpoint (gemma3), its vision tower not loaded")
      .def_static("from_json_file", &ArchSpec::from_json_file, py::arg("path"),
                  "the spec of a config.json (see the class); ValueError naming the key it refuses")
      .def("parameter_count", &ArchSpec::parameter_count, "weights in the text model (tied embeddings once)")
      .def("hf_module_name", &ArchSpec::hf_module_name, py::arg("layer"), py::arg("projection"),
           "Hugging Face's module name of a layer's projection (model.layers.3.self_attn.q_proj); ValueError "
           "for a projection the family lacks")
      .def("projection_shape", &ArchSpec::projection_shape, py::arg("projection"),
           "a projection's weight shape [out_features, in_features] (every layer's); ValueError for a "
           "projection the family lacks")
      .def("adapter_targets", &ArchSpec::adapter_targets, py::arg("targets"),
           "the projections (in adapter order) that adapter.targets adapt in this family; ValueError naming an "
           "unknown target");
  m.def("supported_model_types", &supported_model_types, "model_type values the family registry knows");
  m.def("weight_files", &weight_files, py::arg("model_dir"),
        "the safetensors files a model directory's checkpoint is read from, as transformers picks them "
        "(csrc/prge/models/weight_files.h); RuntimeError naming what is missing");
  m.def("wrapper_text_weight_name", &wrapper_text_weight_name, py::arg("name"),
        "a gemma3 wrapper checkpoint's tensor name as the text model's; '' for vision tensors");
  py::class_<QuantizedWeight>(m, "QuantizedWeight", "a frozen weight kept quantized (csrc/prge/quantized_weight.h)")
      .def_readonly("bits", &QuantizedWeight::bits)
      .def_readonly("group_size", &QuantizedWeight::group_size)
      .def_readonly("qweight", &QuantizedWeight::qweight)
      .def_readonly("scales", &QuantizedWeight::scales)
      .def_readonly("offsets", &QuantizedWeight::offsets)
      .def("dequantize", [](const QuantizedWeight& q, const std::string& dtype) { return q.dequantize(parse_dtype(dtype)); },
           py::arg("dtype") = "float32");
  m.def("quantize_weight", &quantize, py::arg("weight"), py::arg("bits"), py::arg("group_size"),
        "round-to-nearest int8 (symmetric) / int4 (asymmetric) quantization, group_size columns per scale");
  m.def(
      "quantized_weight_dequantize",
      [](torch::Tensor qweight, torch::Tensor scales, std::optional<torch::Tensor> offsets, int64_t bits,
         int64_t group_size, int64_t rows, int64_t cols) {
        QuantizedWeight q;
        q.bits = bits, q.group_size = group_size, q.rows = rows, q.cols = cols;
        q.qweight = std::move(qweight), q.scales = std::move(scales);
        if (offsets) q.offsets = *offsets;
        q.validate("argument");
        return q.dequantize(torch::kFloat32);
      },
      py::arg("qweight"), py::arg("scales"), py::arg("offsets"), py::arg("bits"), py::arg("group_size"),
      py::arg("rows"), py::arg("cols"), "the float32 weight [rows, cols] of quantized tensors (the model's own dequantization)");

  py::class_<AdapterOptions>(m, "AdapterOptions")
      .def(py::init([](int64_t rank, double alpha, std::vector<std::string> targets, uint64_t seed, bool use_rslora,
                       const py::dict& rank_pattern, const py::dict& alpha_pattern) {
             AdapterOptions o{rank, alpha, std::move(targets), seed};
             o.use_rslora = use_rslora;
             for (const auto& [k, v] : rank_pattern) o.rank_pattern.emplace_back(py::cast<std::string>(k), py::cast<int64_t>(v));
             for (const auto& [k, v] : alpha_pattern) o.alpha_pattern.emplace_back(py::cast<std::string>(k), py::cast<double>(v));
             return o;
           }),
           py::arg("rank") = 16, py::arg("alpha") = 32.0, py::arg("targets") = projection_names(),
           py::arg("init_seed") = 0, py::arg("use_rslora") = false, py::arg("rank_pattern") = py::dict(),
           py::arg("alpha_pattern") = py::dict(),
           "LoRA settings in PEFT's terms (rank_pattern / alpha_pattern keys match module names as PEFT's do)")
      .def_readonly("rank", &AdapterOptions::rank, "r, the adapters' rank (rank_pattern overrides it per module)")
      .def_readonly("alpha", &AdapterOptions::alpha, "lora_alpha: the scaling is alpha / r (alpha / sqrt(r) with "
                    "use_rslora)")
      .def_readonly("targets", &AdapterOptions::targets, "the projections adapted (q_proj ... down_proj)")
      .def_readonly("init_seed", &AdapterOptions::init_seed, "seed of the frozen random A (LoRA-FA), B starts at 0")
      .def_readonly("init_from", &AdapterOptions::init_from, "a PEFT LoRA adapter directory to start from, or ''")
      .def_readonly("use_rslora", &AdapterOptions::use_rslora, "scaling alpha / sqrt(r) (rank-stabilised LoRA)")
      .def_property_readonly("rank_pattern", [](const AdapterOptions& o) {
        py::dict d;
        for (const auto& [k, v] : o.rank_pattern) d[py::str(k)] = v;
        return d;
      })
      .def_property_readonly("alpha_pattern", [](const AdapterOptions& o) {
        py::dict d;
        for (const auto& [k, v] : o.alpha_pattern) d[py::str(k)] = v;
        return d;
      })
      .def("rank_of", &AdapterOptions::rank_of, py::arg("module"),
           "r of a module (its Hugging Face name), rank_pattern applied as PEFT applies it")
      .def("scaling_of", &AdapterOptions::scaling_of, py::arg("module"),
           "the scaling of a module's B A (alpha / r, or alpha / sqrt(r)), patterns applied as PEFT applies them");

  py::class_<TokenBatch>(m, "TokenBatch",
                         "A right-padded batch in MeZO's prompt format. input_ids: [b, T] int64. targets: [b, T] "
                         "int64, targets[i, t] the token position t must predict (an answer token) or IGNORE_INDEX "
                         "(-100: prompt and padding); every sequence needs at least one answer token. Raises "
                         "ValueError for other dtypes or shapes, an empty batch, or a sequence without an answer")
      .def(py::init([](torch::Tensor ids, torch::Tensor targets) {
             TokenBatch b{std::move(ids), std::move(targets)};
             b.validate();
             return b;
           }),
           py::arg("input_ids"), py::arg("targets"))
      .def_readonly("input_ids", &TokenBatch::input_ids)
      .def_readonly("targets", &TokenBatch::targets);

  py::class_<CausalLM, std::shared_ptr<CausalLM>>(m, "CausalLM",
                                                  "A decoder-only language model of a supported family (ArchSpec), "
                                                  "computed in prge's C++ core as transformers' class of that "
                                                  "model_type computes it, with optional LoRA-FA adapters. "
                                                  "Weights are held in the model's dtype on its device; "
                                                  "every method runs without autograd")
      .def_static(
          "from_pretrained",
          [](const std::string& dir, const std::string& device, const std::string& dtype, const std::string& quantize,
             int64_t group_size) {
            const auto format = weight_format(quantize, group_size);
            py::gil_scoped_release release;
            return std::make_shared<CausalLM>(
                CausalLM::from_pretrained(dir, torch::Device(device), parse_dtype(dtype), format));
          },
          py::arg("path"), py::arg("device") = "cpu", py::arg("dtype") = "float32", py::arg("quantize") = "none",
          py::arg("group_size") = 0,
          "config.json + safetensors of a directory; quantize: none | dense | int8 | int4 (frozen projections, round to "
          "nearest, group_size columns per scale). A checkpoint's own quantized weights (a GGUF conversion's) are "
          "kept as stored under none, dequantized under dense, and their dequantized copy quantized again under "
          "int8 / int4")
      .def_static(
          "random",
          [](const ArchSpec& config, uint64_t seed, const std::string& device, const std::string& dtype,
             const std::string& quantize, int64_t group_size) {
            return std::make_shared<CausalLM>(CausalLM::random(config, seed, torch::Device(device), parse_dtype(dtype),
                                                               weight_format(quantize, group_size)));
          },
          py::arg("config"), py::arg("seed") = 0, py::arg("device") = "cpu", py::arg("dtype") = "float32",
          py::arg("quantize") = "none", py::arg("group_size") = 0,
          "a model of `config` with random weights (normal, std 0.02; norm gains 1) from `seed`: for tests and speed "
          "measurements at real shapes")
      .def_property_readonly("quantized", &CausalLM::quantized, "projection weights kept quantized")
      .def_property_readonly("projection_bytes", &CausalLM::projection_bytes,
                             "bytes the frozen projection weights take as held")
      .def("attach_adapters", &CausalLM::attach_adapters, py::arg("options"),
           "LoRA-FA adapters (AdapterOptions) on the targeted projections: A [r, in] random and frozen, B [out, r] "
           "zero and trained, y = W x + scaling · B A x. Attaching again replaces them. ValueError naming a target "
           "the family has no projection for")
      .def_property("layer_kernels", &CausalLM::layer_kernels, &CausalLM::set_layer_kernels,
                    "fused CUDA RoPE / SwiGLU kernels (CUDA builds); False: the ATen path")
      .def_property("gated_low_rank_kernel", &CausalLM::gated_low_rank_kernel, &CausalLM::set_gated_low_rank_kernel,
                    "with layer_kernels: gate/up's LoRA-FA term added inside the gated activation (a Triton kernel "
                    "compiled ahead of time, bf16 / fp16, ranks 16, 32, 64, SiLU or GELU-tanh, gate and up separate "
                    "projections) where one fits (the default); False: the term's batched GEMM, then the activation. Set it before a Trainer "
                    "captures its CUDA graphs")
      .def_property_readonly("gated_low_rank_kernel_calls", &CausalLM::gated_low_rank_kernel_calls,
                             "MLP blocks that took the gated low-rank kernel since the model was made (a CUDA "
                             "graph's capture counts, its replays do not): > 0 means the kernel ran")
      .def_property("fold_lora_a", &CausalLM::fold_lora_a, &CausalLM::set_fold_lora_a,
                    "A stacked under W for o, down and q/k/v, so one GEMM gives x W^T and A x (x read once); off "
                    "by default. Turning it on with adapters attached moves W and A into new storage: a Trainer "
                    "made before refuses to step, and tensors taken before (adapters()' lora_a, "
                    "full_parameters()) keep the old storage; take them again")
      .def_property_readonly("lora_a_folded", &CausalLM::lora_a_folded,
                             "the adapted projections whose A is folded under W now, as layers.N.o_proj")
      .def_property_readonly("spec", &CausalLM::spec, "the architecture spec read from config.json")
      .def_property_readonly("config", &CausalLM::spec, "the spec (its name before the model seam)")
      .def("rope_frequencies", &CausalLM::rope_frequencies, py::arg("length"), py::arg("rope") = 0,
           "RoPE inverse frequencies [rotary_dim / 2] float32 of RoPE set `rope` for a forward of `length` positions")
      .def("hf_module_name", &CausalLM::hf_module_name, py::arg("layer"), py::arg("projection"),
           "the Hugging Face module name of a layer's projection (model.layers.N.self_attn.q_proj)")
      .def_property_readonly("device", [](const CausalLM& m) { return m.device().str(); },
                             "where the weights are ('cpu', 'cuda:0')")
      .def("hidden_states",
           [](const CausalLM& m, const torch::Tensor& ids) {
             c10::InferenceMode guard;
             return m.hidden_states(ids);
           },
           py::arg("input_ids"),
           "the final-normed hidden states [N, T, hidden_size] (the model's dtype) of input_ids [N, T] int64, "
           "right-padded (causal attention: padding at the end changes no earlier position)")
      .def("logits",
           [](const CausalLM& m, const torch::Tensor& ids) {
             py::gil_scoped_release release;
             c10::InferenceMode guard;
             return m.logits(ids);
           },
           py::arg("input_ids"),
           "logits [N, T, vocab_size] float32 of input_ids [N, T] int64 (right-padded), adapters applied, "
           "final_logit_softcapping too where the family has it")
      .def("plan_losses",
           [](const CausalLM& m, const TokenBatch& batch, const PerturbationPlan& plan) {
             py::gil_scoped_release release;
             c10::InferenceMode guard;
             return evaluate_plan(m, batch, plan);  // unperturbed weights
           },
           py::arg("batch"), py::arg("plan"),
           "Mean answer-token loss of every copy of `plan`, from one batched forward.")
      .def("adapters",
           [](CausalLM& m) {
             py::list out;
             for (auto* layer : m.adapted_layers()) {
               py::dict d;
               d["name"] = layer->name();
               d["index"] = layer->param_index();
               d["lora_a"] = layer->lora_a();
               d["lora_b"] = layer->lora_b();
               d["scaling"] = layer->scaling();
               out.append(d);
             }
             return out;
           },
           "LoRA-FA layers in parameter order; lora_b shares storage with the model.")
      .def(
          "generate",
          [](const CausalLM& m, const std::vector<std::vector<int64_t>>& prompts, int64_t max_new_tokens,
             double temperature, int64_t top_k, double top_p, uint64_t seed, std::vector<int64_t> stop_tokens,
             int64_t pad_id, double repetition_penalty, int64_t no_repeat_ngram_size) {
            GenerationOptions o{max_new_tokens, temperature, top_k, top_p, seed, std::move(stop_tokens), pad_id,
                                repetition_penalty, no_repeat_ngram_size};
            py::gil_scoped_release release;
            return generate(m, prompts, o);
          },
          py::arg("prompts"), py::arg("max_new_tokens") = 32, py::arg("temperature") = 0.0, py::arg("top_k") = 0,
          py::arg("top_p") = 1.0, py::arg("seed") = 0, py::arg("stop_tokens") = std::vector<int64_t>{},
          py::arg("pad_id") = 0, py::arg("repetition_penalty") = 1.0, py::arg("no_repeat_ngram_size") = 0,
          "New token ids for each prompt (lists of ids), with a KV cache: greedy at temperature 0; "
          "repetition_penalty and no_repeat_ngram_size as transformers' generate() applies them.")
      .def("full_parameters",
           [](CausalLM& m) {
             py::list out;
             for (const auto& p : m.full_parameters()) out.append(py::make_tuple(p.name, p.value));
             return out;
           },
           "(name, tensor) for every weight in MeZO's parameter order; tensors share storage.");
  // The names from before the model seam, while Python code moves to CausalLM / ArchSpec.
  m.attr("LlamaModel") = m.attr("CausalLM");
  m.attr("LlamaConfig") = m.attr("ArchSpec");
}

}  // namespace prge::bindings

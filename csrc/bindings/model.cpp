#include "prge/generation.h"
#include "prge/estimators/prge_estimator.h"
#include "prge/models/llama.h"
#include "prge/token_batch.h"

#include <torch/extension.h>

namespace py = pybind11;

namespace prge::bindings {

void bind_model(py::module_& m) {
  m.attr("IGNORE_INDEX") = kIgnoreIndex;  // target value of positions that are not scored
  m.attr("PROJECTIONS") = py::tuple(py::cast(projection_names()));  // adapter targets, layer order
  py::class_<RopeParameters>(m, "RopeParameters", "RoPE variant and its parameters, as read from config.json")
      .def(py::init<>())
      .def_property_readonly("type", [](const RopeParameters& r) { return to_string(r.type); })
      .def_readwrite("theta", &RopeParameters::theta)
      .def_readonly("factor", &RopeParameters::factor)
      .def_readonly("original_max_position_embeddings", &RopeParameters::original_max_position_embeddings)
      .def_readonly("attention_factor", &RopeParameters::attention_factor);

  py::class_<LlamaConfig>(m, "LlamaConfig")
      .def(py::init<>())
      .def_readwrite("vocab_size", &LlamaConfig::vocab_size)
      .def_readwrite("hidden_size", &LlamaConfig::hidden_size)
      .def_readwrite("intermediate_size", &LlamaConfig::intermediate_size)
      .def_readwrite("num_hidden_layers", &LlamaConfig::num_hidden_layers)
      .def_readwrite("num_attention_heads", &LlamaConfig::num_attention_heads)
      .def_readwrite("num_key_value_heads", &LlamaConfig::num_key_value_heads)
      .def_readwrite("head_dim", &LlamaConfig::head_dim)
      .def_readwrite("rms_norm_eps", &LlamaConfig::rms_norm_eps)
      .def_readwrite("max_position_embeddings", &LlamaConfig::max_position_embeddings)
      .def_readwrite("rope", &LlamaConfig::rope)
      .def_readwrite("tie_word_embeddings", &LlamaConfig::tie_word_embeddings)
      .def_static("from_json_file", &LlamaConfig::from_json_file)
      .def("parameter_count", &LlamaConfig::parameter_count);

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
      .def_readonly("rank", &AdapterOptions::rank)
      .def_readonly("alpha", &AdapterOptions::alpha)
      .def_readonly("targets", &AdapterOptions::targets)
      .def_readonly("init_seed", &AdapterOptions::init_seed)
      .def_readonly("init_from", &AdapterOptions::init_from)
      .def_readonly("use_rslora", &AdapterOptions::use_rslora)
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
      .def("rank_of", &AdapterOptions::rank_of, py::arg("module"))
      .def("scaling_of", &AdapterOptions::scaling_of, py::arg("module"));

  py::class_<TokenBatch>(m, "TokenBatch")
      .def(py::init([](torch::Tensor ids, torch::Tensor targets) {
             TokenBatch b{std::move(ids), std::move(targets)};
             b.validate();
             return b;
           }),
           py::arg("input_ids"), py::arg("targets"))
      .def_readonly("input_ids", &TokenBatch::input_ids)
      .def_readonly("targets", &TokenBatch::targets);

  py::class_<LlamaModel, std::shared_ptr<LlamaModel>>(m, "LlamaModel")
      .def_static(
          "from_pretrained",
          [](const std::string& dir, const std::string& device, const std::string& dtype) {
            py::gil_scoped_release release;
            return std::make_shared<LlamaModel>(
                LlamaModel::from_pretrained(dir, torch::Device(device), parse_dtype(dtype)));
          },
          py::arg("path"), py::arg("device") = "cpu", py::arg("dtype") = "float32")
      .def_static(
          "random",
          [](const LlamaConfig& config, uint64_t seed, const std::string& device,
             const std::string& dtype) {
            return std::make_shared<LlamaModel>(
                LlamaModel::random(config, seed, torch::Device(device), parse_dtype(dtype)));
          },
          py::arg("config"), py::arg("seed") = 0, py::arg("device") = "cpu",
          py::arg("dtype") = "float32")
      .def("attach_adapters", &LlamaModel::attach_adapters, py::arg("options"))
      .def_property("layer_kernels", &LlamaModel::layer_kernels, &LlamaModel::set_layer_kernels,
                    "fused CUDA RoPE / SwiGLU kernels (CUDA builds); False: the ATen path")
      .def_property_readonly("config", &LlamaModel::config)
      .def("rope_frequencies", &LlamaModel::rope_frequencies, py::arg("length"),
           "RoPE inverse frequencies [head_dim / 2] float32 for a forward of `length` positions")
      .def_property_readonly("device", [](const LlamaModel& m) { return m.device().str(); })
      .def("hidden_states",
           [](const LlamaModel& m, const torch::Tensor& ids) {
             c10::InferenceMode guard;
             return m.hidden_states(ids);
           })
      .def("logits",
           [](const LlamaModel& m, const torch::Tensor& ids) {
             py::gil_scoped_release release;
             c10::InferenceMode guard;
             return m.logits(ids);
           })
      .def("plan_losses",
           [](const LlamaModel& m, const TokenBatch& batch, const PerturbationPlan& plan) {
             py::gil_scoped_release release;
             c10::InferenceMode guard;
             return evaluate_plan(m, batch, plan);  // unperturbed weights
           },
           py::arg("batch"), py::arg("plan"),
           "Mean answer-token loss of every copy of `plan`, from one batched forward.")
      .def("adapters",
           [](LlamaModel& m) {
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
          [](const LlamaModel& m, const std::vector<std::vector<int64_t>>& prompts, int64_t max_new_tokens,
             double temperature, int64_t top_k, double top_p, uint64_t seed, std::vector<int64_t> stop_tokens,
             int64_t pad_id) {
            GenerationOptions o{max_new_tokens, temperature, top_k, top_p, seed, std::move(stop_tokens), pad_id};
            py::gil_scoped_release release;
            return generate(m, prompts, o);
          },
          py::arg("prompts"), py::arg("max_new_tokens") = 32, py::arg("temperature") = 0.0, py::arg("top_k") = 0,
          py::arg("top_p") = 1.0, py::arg("seed") = 0, py::arg("stop_tokens") = std::vector<int64_t>{},
          py::arg("pad_id") = 0,
          "New token ids for each prompt (lists of ids), with a KV cache: greedy at temperature 0.")
      .def("full_parameters",
           [](LlamaModel& m) {
             py::list out;
             for (const auto& p : m.full_parameters()) out.append(py::make_tuple(p.name, p.value));
             return out;
           },
           "(name, tensor) for every weight in MeZO's parameter order; tensors share storage.");
}

}  // namespace prge::bindings

#include "prge/config.h"

#include <torch/extension.h>

namespace py = pybind11;

namespace prge::bindings {

void bind_config(py::module_& m) {
  py::register_exception<ConfigError>(m, "ConfigError", PyExc_ValueError);
  m.attr("NO_VALUE") = kNoValue;  // what a key with YAML's null is told (sweep files too)
  m.attr("YAML_MAX_DEPTH") = kMaxYamlDepth;  // nesting a config or sweep file may have
  m.attr("YAML_MAX_VALUES") = kMaxYamlValues;  // values it may hold, aliases counted each time

  py::class_<ModelOptions>(m, "ModelOptions",
                           "The config's model section (the README's key table gives each key, its values and default)")
      .def_readonly("name", &ModelOptions::name)
      .def_readonly("dtype", &ModelOptions::dtype)
      .def_readonly("device", &ModelOptions::device)
      .def_readonly("quantize", &ModelOptions::quantize)
      .def_readonly("group_size", &ModelOptions::group_size)
      .def_readonly("fold_lora_a", &ModelOptions::fold_lora_a)
      .def_readonly("gated_low_rank_kernel", &ModelOptions::gated_low_rank_kernel)
      .def_property_readonly("effective_group_size", &ModelOptions::effective_group_size,
                             "columns per scale quantizing at load uses (int4 unset: 64; 0: per channel / none)");
  py::class_<DataOptions>(m, "DataOptions",
                          "The config's data section (the README's key table gives each key, its values and default)")
      .def_readonly("task", &DataOptions::task)
      .def_readonly("data_dir", &DataOptions::data_dir)
      .def_readonly("protocol", &DataOptions::protocol)
      .def_readonly("train_examples", &DataOptions::train_examples)
      .def_readonly("dev_examples", &DataOptions::dev_examples)
      .def_readonly("eval_examples", &DataOptions::eval_examples)
      .def_readonly("batch_size", &DataOptions::batch_size)
      .def_readonly("max_length", &DataOptions::max_length)
      .def_readonly("train_from", &DataOptions::train_from)
      .def_readonly("train_file", &DataOptions::train_file)
      .def_readonly("eval_file", &DataOptions::eval_file)
      .def_readonly("template", &DataOptions::prompt_template)
      .def_readonly("label_field", &DataOptions::label_field)
      .def_readonly("label_words", &DataOptions::label_words)
      .def_readonly("response_field", &DataOptions::response_field)
      .def_readonly("choices_field", &DataOptions::choices_field)
      .def_readonly("chat_template", &DataOptions::chat_template);
  py::class_<RunOptions>(m, "RunOptions",
                         "The config's run section (the README's key table gives each key, its values and default)")
      .def_readonly("steps", &RunOptions::steps)
      .def_readonly("seed", &RunOptions::seed)
      .def_readonly("eval_every", &RunOptions::eval_every)
      .def_readonly("log_every", &RunOptions::log_every)
      .def_readonly("checkpoint_every", &RunOptions::checkpoint_every)
      .def_readonly("checkpoint_format", &RunOptions::checkpoint_format)
      .def_readonly("data_parallel", &RunOptions::data_parallel)
      .def_readonly("output_dir", &RunOptions::output_dir);
  py::class_<RunConfig>(m, "RunConfig",
                        "A run's whole config as parse_run_config / load_run_config read it: its sections (adapter: "
                        "AdapterOptions, estimator: EstimatorOptions, optimizer: OptimizerOptions), warnings, and "
                        "where each key was given")
      .def_readonly("model", &RunConfig::model)
      .def_readonly("adapter", &RunConfig::adapter)
      .def_readonly("use_adapter", &RunConfig::use_adapter)
      .def_readonly("estimator", &RunConfig::estimator)
      .def_readonly("optimizer", &RunConfig::optimizer)
      .def_readonly("data", &RunConfig::data)
      .def_readonly("run", &RunConfig::run)
      .def_readonly("warnings", &RunConfig::warnings)
      .def_readonly("places", &RunConfig::places, "dotted key -> 'file:line:col: key' of every key the text gave")
      .def_property_readonly("load_quantize", &RunConfig::load_quantize,
                             "model.quantize as loading uses it: 'dense' for MeZO under 'none' (MeZO perturbs "
                             "every weight, so a checkpoint's own quantized blocks load dequantized)")
      .def("to_yaml", &RunConfig::to_yaml, py::arg("every_key") = false,
           "config.yaml's text; every_key: also keys at their defaults (prge check)");
  m.def(
      "parse_run_config",
      [](const std::string& yaml_text, const std::string& source, const std::vector<py::tuple>& overrides) {
        std::vector<ConfigOverride> applied;
        for (const auto& o : overrides) {
          if (o.size() != 2 && o.size() != 3) throw py::value_error("an override is (key, value text[, origin])");
          applied.push_back({o[0].cast<std::string>(), o[1].cast<std::string>(),
                             o.size() == 3 ? o[2].cast<std::string>() : std::string()});
        }
        return parse_run_config(yaml_text, source, applied);
      },
      py::arg("yaml_text"), py::arg("source") = "<string>", py::arg("overrides") = std::vector<py::tuple>{},
      "The RunConfig of a YAML text; overrides: (dotted key, YAML value text[, origin]) applied to the parsed "
      "mapping in order (--set), errors naming the override.");
  m.def("load_run_config", &load_run_config, py::arg("path"),
        "The RunConfig of a YAML file (a run directory's config.yaml); ConfigError (a ValueError) naming the file, "
        "line and key of a value it refuses");
  m.def("expand_path", &expand_path, py::arg("value"),
        "A path value as the config's path keys read it: a leading ~ / ~user as that home directory "
        "(os.path.expanduser); ValueError for only whitespace, whitespace before or after, or an unknown user");
  m.def("config_key_path", &key_path, py::arg("dotted"),
        "The keys of an override's dotted path as the config reader splits it: 'data.label_words.\"1.5\"' -> "
        "['data', 'label_words', '1.5']; empty for a path with an empty key or an open quote.");
  m.def(
      "canonical_parallelism", [](const std::string& name) { return to_string(parse_parallelism(name)); },
      py::arg("name"), "The current spelling of a parallel mode (old spellings: single, none).");
}

}  // namespace prge::bindings

#pragma once
// RunConfig: one YAML file, parsed and validated once. Each section configures one
// component with that component's own options struct; unknown keys and bad values are
// rejected with the file, line, key and the allowed values.
#include "prge/estimators/zo_estimator.h"
#include "prge/adapter_options.h"
#include "prge/optim/optimizer.h"

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>

namespace prge {

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A config (or sweep file) is a few levels of small mappings; YAML nested deeper, or holding more
// values, is refused before any walk: yaml-cpp and PyYAML make an alias inside the node it names
// (`a: &x [*x]`) a node that holds itself, and aliases of aliases a tree that doubles each level.
inline constexpr int kMaxYamlDepth = 64;
inline constexpr int64_t kMaxYamlValues = 100000;

// What a key with YAML's null (an empty value, ~, null) is told, in a config and a sweep file: it
// is no value, and not the default, which leaving the key out gives.
inline constexpr const char* kNoValue =
    "no value (YAML reads an empty value, ~ and null as null); leave the key out for its default";

struct ModelOptions {
  std::string name = "smollm2-135m";  // registry name or a directory with config.json + *.safetensors
  std::string dtype = "float32";
  std::string device = "cpu";
  // Frozen projection weights: none (as the checkpoint stores them: a GGUF's quantized blocks stay
  // quantized), dense (dequantized at load), or a dense checkpoint quantized at load, round to
  // nearest: int8 (one scale per output channel, or per group_size) | int4 (asymmetric,
  // group-wise, group_size 64 by default).
  std::string quantize = "none";
  int64_t group_size = 0;  // 0: int8 per channel, int4 64
  // LoRA-FA's A stacked under W for o, down and q/k/v (CausalLM::set_fold_lora_a): one GEMM reads
  // x once for x Wᵀ and A x. Off by default; needs adapters.
  bool fold_lora_a = false;
  // Gate/up's LoRA-FA term added inside the gated activation by a Triton kernel where one fits
  // (CausalLM::set_gated_low_rank_kernel; CUDA, bf16 / fp16). On by default; false: the term's
  // batched GEMM, as every run before session 31 (results equal to rounding).
  bool gated_low_rank_kernel = true;

  // The columns per scale that quantizing at load uses (models/causal_lm.cpp's weight_format):
  // group_size, else 64 for int4; 0 for int8 per output channel and for none / dense.
  int64_t effective_group_size() const;
};

struct DataOptions {
  std::string task = "fine_food";
  std::string data_dir;  // empty: the task's default location
  // paper: train on the first train_examples after a seeded shuffle, evaluate on the
  //        first eval_examples of the validation split (best = max over evaluations).
  // mezo:  MeZO's protocol: train and dev (dev_examples) drawn from the shuffled train
  //        split, test = eval_examples of the validation split; the best checkpoint is
  //        picked on dev and reported on test.
  std::string protocol = "paper";
  int64_t train_examples = 1000;
  int64_t dev_examples = 500;  // mezo protocol only
  int64_t eval_examples = 500;
  int64_t batch_size = 4;
  int64_t max_length = 128;
  // train: training examples from the train split; validation: from a seeded part of the
  // validation split, the rest evaluated (data published without a training split).
  std::string train_from = "train";
  // task: custom, from config alone. Files are JSONL, CSV, TSV or a datasets.save_to_disk
  // directory (relative paths: to data_dir when set, else to the working directory).
  // Classification (MeZO format): label_words maps each value of label_field to its word;
  // generation / SFT: response_field holds the answer, and the loss counts its tokens only;
  // multiple choice: choices_field holds each record's candidates, label_field the gold one.
  std::string train_file, eval_file;
  std::string prompt_template;  // YAML key `template`: "{field}" placeholders
  std::string label_field = "label";
  std::vector<std::pair<std::string, std::string>> label_words;  // label value -> word, in order
  std::string response_field;
  std::string choices_field;
  bool chat_template = false;  // wrap the prompt with the tokenizer's chat template
  bool custom() const { return task == "custom"; }
};

struct RunOptions {
  int64_t steps = 300;
  uint64_t seed = 42;
  int64_t eval_every = 0;  // 0: evaluate only before and after
  int64_t log_every = 10;
  int64_t checkpoint_every = 0;  // 0: only the final weights; N: a resumable checkpoint every N steps
  // What a checkpoint holds: "weights" (the trained tensors and the optimizer state) or, for
  // full-parameter MeZO, "updates" (every step's projected gradients, replayed on the base
  // weights at resume: MeZO's seed trick; bytes per step instead of the model's size).
  std::string checkpoint_format = "weights";
  // Under torchrun: processes that split each batch (the rest split the queries); see
  // python/prge/distributed.py. 1 in a single process.
  int64_t data_parallel = 1;
  std::string output_dir = "runs/default";
};

struct RunConfig {
  ModelOptions model;
  AdapterOptions adapter;
  bool use_adapter = true;  // false for full-parameter MeZO
  EstimatorOptions estimator;
  OptimizerOptions optimizer;
  DataOptions data;
  RunOptions run;
  // Accepted but deprecated spellings, each "file:line:col: key: message"; not in to_yaml().
  std::vector<std::string> warnings;
  // Where each key given in the text (or by an override) was read: dotted key ->
  // "file:line:col: key", or "file: --set key: key" for a value an override wrote; for messages
  // about a value that only later turns out wrong (a model name that names nothing).
  std::map<std::string, std::string> places;

  // Normalised YAML, stored beside results as config.yaml; finished and resumable runs are
  // recognised by this text, so keys added after the first release (model.quantize, the
  // adapter's init_from, use_rslora and patterns) are written only when set.
  // every_key: also those keys at their defaults, and model.group_size as quantizing uses it
  // (`prge check`); it parses back to the same config.
  std::string to_yaml(bool every_key = false) const;

  // The model.quantize that loading uses: model.quantize, except "dense" for full-parameter
  // MeZO under "none" (MeZO perturbs every weight, so a checkpoint's own quantized blocks load
  // dequantized; an explicit int8 / int4 with MeZO stays refused by the trainer). The one
  // place this rule lives: the binding, prge_train and to_yaml(every_key) all read it.
  std::string load_quantize() const;
};

// One `--set KEY=VALUE` (or a sweep's grid / variant value): applied to the parsed mapping
// before it is read, VALUE read as a YAML 1.2 node (a scalar, or a flow list / mapping).
struct ConfigOverride {
  std::string key;     // dotted: estimator.queries
  std::string value;   // YAML text
  std::string origin;  // how messages name it, as a place (a sweep's "FILE:LINE:COL: grid KEY");
                      // empty: "CONFIG: --set KEY"
};

// The keys of an override's dotted path: `data.label_words."1.5"` -> data, label_words, 1.5 (a
// key that holds a dot is written in double quotes); empty for a path with an empty key or an
// open quote.
std::vector<std::string> key_path(const std::string& dotted);

// The config of one YAML text, read once: duplicate keys and an empty text are errors, the
// overrides are applied to the parsed mapping in order, and every error names the file, line
// and key, or the override that wrote the key.
RunConfig parse_run_config(const std::string& yaml_text, const std::string& source = "<string>",
                           const std::vector<ConfigOverride>& overrides = {});
RunConfig load_run_config(const std::string& path);

// A config's path value as every path key reads it: a leading "~" / "~user" as that home
// directory (as Python's os.path.expanduser: $HOME when set, else the account's); other paths as
// they are. std::invalid_argument, its message without the key, for a value of only whitespace,
// one with whitespace before or after it, or an unknown user / home directory.
std::string expand_path(const std::string& value);

}  // namespace prge

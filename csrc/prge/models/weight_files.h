#pragma once
// Which files of a Hugging Face model directory hold its weights, and the names a multimodal
// wrapper stores its text model under: read as transformers' from_pretrained reads them.
#include "prge/io/safetensors.h"

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace prge {

// The checkpoint files of model directory `dir`, as transformers picks them: model.safetensors
// when it exists, else the shards model.safetensors.index.json's weight_map names (each once,
// sorted). Other *.safetensors files (a consolidated.safetensors beside the
// shards, a stray copy) are not read, as transformers does not read them. Raises
// std::runtime_error naming the directory or the index: no model.safetensors nor index (with the
// *.safetensors files there, which transformers would not load either), an index without a
// weight_map object, or a shard it names that is not in the directory.
std::vector<std::string> weight_files(const std::string& dir);

// Every tensor of weight_files(dir) for which `wanted(name)` is true (all when empty); with
// `file_of`, also each tensor's file (its path) by name, so that an error found later can name
// the shard. Raises std::runtime_error naming both files when two hold a tensor of the same name
// (which one transformers would load depends on the order it reads them in).
io::TensorMap load_weight_files(const std::string& dir, const std::function<bool(const std::string&)>& wanted = {},
                                std::map<std::string, std::string>* file_of = nullptr);

// A gemma3 wrapper checkpoint's tensor name as Gemma3ForCausalLM's (text model) name, from
// either layout transformers has written (model.language_model.X or language_model.model.X ->
// model.X; language_model.lm_head.X -> lm_head.X; other names unchanged); "" for the vision
// tower's and the multimodal projector's tensors, which the text model has no use for.
std::string wrapper_text_weight_name(const std::string& name);

}  // namespace prge

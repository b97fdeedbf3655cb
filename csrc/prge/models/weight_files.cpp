#include "prge/models/weight_files.h"

#include "prge/io/json_file.h"
#include "prge/models/causal_lm.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <stdexcept>

namespace fs = std::filesystem;

namespace prge {

namespace {
constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }
}  // namespace

std::vector<std::string> weight_files(const std::string& dir) {
  const fs::path root(dir);
  // transformers looks for the single file first: an index beside it (left behind when a
  // sharded save was saved over whole) is not read.
  if (fs::is_regular_file(root / kSingleFile)) return {(root / kSingleFile).string()};
  const auto index = root / kIndexFile;
  if (fs::exists(index)) {
    const auto parsed = io::load_json_file(index.string());
    const auto map = parsed.IsMap() ? parsed["weight_map"] : YAML::Node();
    if (!map || !map.IsMap()) {
      throw std::runtime_error(fmt::format("{}: weight_map: missing or not an object (a sharded checkpoint's index "
                                           "maps each tensor to its file)", index.string()));
    }
    std::set<std::string> shards;
    for (const auto& entry : map) {
      const auto tensor = entry.first.as<std::string>();
      if (!entry.second.IsScalar()) {
        throw std::runtime_error(fmt::format("{}: weight_map: {}: expected a file name", index.string(), tensor));
      }
      const auto shard = entry.second.Scalar();
      if (!fs::is_regular_file(root / shard)) {
        throw std::runtime_error(fmt::format("{}: weight_map: tensor {} is in {}, which {} does not have (an "
                                             "incomplete download or copy?)", index.string(), tensor, shard, dir));
      }
      shards.insert((root / shard).string());
    }
    return {shards.begin(), shards.end()};
  }
  std::vector<std::string> others;
  for (const auto& entry : fs::directory_iterator(root)) {
    if (entry.path().extension() == ".safetensors" && entry.path().filename() != kQuantizedWeightsFile) {
      others.push_back(entry.path().filename().string());
    }
  }
  std::sort(others.begin(), others.end());
  if (others.empty()) throw std::runtime_error(fmt::format("{}: no model.safetensors (nor {})", dir, kIndexFile));
  throw std::runtime_error(fmt::format(
      "{}: no model.safetensors nor {}, the files transformers reads a checkpoint from; it has {}, which transformers "
      "would not load either (a checkpoint saved by save_pretrained has one of the two; a single complete file may "
      "be renamed model.safetensors)", dir, kIndexFile, fmt::join(others, ", ")));
}

io::TensorMap load_weight_files(const std::string& dir, const std::function<bool(const std::string&)>& wanted,
                                std::map<std::string, std::string>* file_of_out) {
  io::TensorMap weights;
  std::map<std::string, std::string> file_of;
  for (const auto& file : weight_files(dir)) {
    for (auto& [name, tensor] : io::load_safetensors(file, wanted)) {
      const auto [earlier, added] = file_of.emplace(name, file);
      if (!added) {
        throw std::runtime_error(fmt::format("{}: tensor {} is in both {} and {}", dir, name,
                                             fs::path(earlier->second).filename().string(),
                                             fs::path(file).filename().string()));
      }
      weights.emplace(name, std::move(tensor));
    }
  }
  if (file_of_out) file_of_out->merge(file_of);
  return weights;
}

std::string wrapper_text_weight_name(const std::string& name) {
  std::string text = name;
  for (const char* prefix : {"language_model.model.", "model.language_model."}) {
    if (starts_with(name, prefix)) text = "model." + name.substr(std::string(prefix).size());
  }
  if (starts_with(name, "language_model.lm_head.")) text = name.substr(std::string("language_model.").size());
  if (text.find("vision_tower") != std::string::npos || text.find("multi_modal_projector") != std::string::npos) {
    return "";
  }
  return text;
}

}  // namespace prge

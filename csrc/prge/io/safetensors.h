#pragma once
// Minimal reader/writer for the safetensors format (8-byte little-endian header
// length, JSON header, raw little-endian tensor bytes).
#include <torch/torch.h>

#include <functional>
#include <map>
#include <string>

namespace prge::io {

using TensorMap = std::map<std::string, torch::Tensor>;

// Reads the tensors of `path` onto the CPU (those `wanted` accepts, when given; the header is
// checked whole). Throws std::runtime_error naming the file and the problem for a missing,
// truncated or malformed file.
TensorMap load_safetensors(const std::string& path, const std::function<bool(const std::string&)>& wanted = {});

// Writes atomically: the data goes to `path + ".tmp"` and is renamed over `path` only
// once complete, so an interrupted save never leaves a corrupt checkpoint.
void save_safetensors(const std::string& path, const TensorMap& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace prge::io

#include "prge/io/safetensors.h"

#include "prge/io/json_file.h"
#include "prge/io/yaml_scalars.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace prge::io {
namespace {

torch::ScalarType dtype_from_name(const std::string& name, const std::string& path) {
  if (name == "F32") return torch::kFloat32;
  if (name == "F16") return torch::kFloat16;
  if (name == "BF16") return torch::kBFloat16;
  if (name == "F64") return torch::kFloat64;
  if (name == "I64") return torch::kInt64;
  if (name == "I32") return torch::kInt32;
  if (name == "U8") return torch::kUInt8;
  if (name == "I8") return torch::kInt8;  // 8-bit quantized codes
  if (name == "BOOL") return torch::kBool;
  throw std::invalid_argument(fmt::format("unsupported dtype '{}' in {}", name, path));
}

std::string dtype_name(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat32: return "F32";
    case torch::kFloat16: return "F16";
    case torch::kBFloat16: return "BF16";
    case torch::kFloat64: return "F64";
    case torch::kInt64: return "I64";
    case torch::kInt32: return "I32";
    case torch::kUInt8: return "U8";
    case torch::kInt8: return "I8";
    case torch::kBool: return "BOOL";
    default: throw std::runtime_error("save_safetensors: unsupported dtype");
  }
}

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

// Text from a damaged file, safe to put in an error message (which Python decodes as
// UTF-8): bytes outside printable ASCII become \xNN.
std::string printable(const std::string& text) {
  std::string out;
  for (unsigned char c : text) {
    if (c >= 0x20 && c < 0x7f) out.push_back(static_cast<char>(c));
    else out += fmt::format("\\x{:02x}", c);
  }
  return out;
}

}  // namespace

// Every size read from the file is checked against the file before it is used, without
// overflow: a hostile or damaged file ends in a runtime_error naming the file, never in an
// allocation sized by garbage or a read past the end.
TensorMap load_safetensors(const std::string& path, const std::function<bool(const std::string&)>& wanted) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw std::runtime_error(fmt::format("{}: cannot open safetensors file", path));
  std::error_code size_error;
  const uint64_t file_size = std::filesystem::file_size(path, size_error);
  if (size_error) throw std::runtime_error(fmt::format("{}: cannot stat safetensors file", path));
  uint64_t header_size = 0;
  if (file_size < 8 || !file.read(reinterpret_cast<char*>(&header_size), 8) || header_size > file_size - 8) {
    throw std::runtime_error(fmt::format("{}: truncated or not a safetensors file", path));
  }
  std::string header(header_size, '\0');
  if (!file.read(header.data(), static_cast<std::streamsize>(header_size))) {
    throw std::runtime_error(fmt::format("{}: truncated safetensors header", path));
  }
  YAML::Node root;
  try {  // a tensor named twice is refused there: Python's safetensors would take its last entry
    root = parse_json(header, path, "safetensors header");
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(printable(e.what()));  // the header's bytes may be anything
  }
  if (!root.IsMap()) throw std::runtime_error(fmt::format("{}: malformed safetensors header (not an object)", path));
  const uint64_t data_size = file_size - 8 - header_size;
  TensorMap tensors;
  for (const auto& entry : root) {
    const auto name = entry.first.Scalar();
    if (name == "__metadata__") continue;
    const auto bad = [&](const std::string& what) {
      return std::runtime_error(fmt::format("{}: tensor '{}': {}", path, printable(name), printable(what)));
    };
    if (printable(name) != name) throw bad("name is not printable ASCII (damaged header?)");
    torch::ScalarType type = torch::kFloat32;
    std::vector<int64_t> shape;
    uint64_t begin = 0, end = 0;
    try {
      const auto& info = entry.second;
      if (!info.IsMap() || !info["shape"].IsSequence() || !info["data_offsets"].IsSequence() ||
          info["data_offsets"].size() != 2) {
        throw bad("malformed entry (needs dtype, shape and two data_offsets)");
      }
      type = dtype_from_name(info["dtype"].Scalar(), path);
      for (const auto& d : info["shape"]) shape.push_back(scalar_as<int64_t>(d));
      begin = scalar_as<uint64_t>(info["data_offsets"][0]);
      end = scalar_as<uint64_t>(info["data_offsets"][1]);
    } catch (const std::invalid_argument& e) {
      throw bad(fmt::format("malformed entry ({})", e.what()));
    } catch (const YAML::Exception& e) {
      throw bad(fmt::format("malformed entry ({})", e.what()));
    }
    // Bytes the shape needs, overflow-checked, before anything is allocated.
    uint64_t nbytes = c10::elementSize(type);
    for (const auto d : shape) {
      if (d < 0) throw bad("negative dimension");
      if (d != 0 && nbytes > data_size / static_cast<uint64_t>(d)) throw bad("shape larger than the file");
      nbytes *= static_cast<uint64_t>(d);
    }
    if (begin > end || end > data_size || end - begin != nbytes) {
      throw bad("inconsistent data_offsets (file truncated or damaged?)");
    }
    if (wanted && !wanted(name)) continue;
    auto tensor = torch::empty(shape, torch::TensorOptions().dtype(type));
    file.seekg(static_cast<std::streamoff>(8 + header_size + begin));
    file.read(static_cast<char*>(tensor.data_ptr()), static_cast<std::streamsize>(nbytes));
    if (!file) throw bad("could not read its bytes");
    tensors.emplace(name, std::move(tensor));
  }
  return tensors;
}

void save_safetensors(const std::string& path, const TensorMap& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::string header = "{";
  bool first = true;
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    for (const auto& [k, v] : metadata) {
      if (!first) header += ",";
      header += fmt::format("\"{}\":\"{}\"", json_escape(k), json_escape(v));
      first = false;
    }
    header += "}";
  }
  std::vector<torch::Tensor> contiguous;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    auto t = tensor.detach().to(torch::kCPU).contiguous();
    std::string shape;
    for (int64_t i = 0; i < t.dim(); ++i) shape += (i ? "," : "") + std::to_string(t.size(i));
    const uint64_t nbytes = static_cast<uint64_t>(t.nbytes());
    header += fmt::format("{}\"{}\":{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
                          first ? "" : ",", json_escape(name), dtype_name(t.scalar_type()), shape,
                          offset, offset + nbytes);
    first = false;
    offset += nbytes;
    contiguous.push_back(t);
  }
  header += "}";
  while (header.size() % 8 != 0) header += ' ';
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error(fmt::format("{}: cannot open for writing", tmp));
    const uint64_t header_size = header.size();
    out.write(reinterpret_cast<const char*>(&header_size), 8);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    for (const auto& t : contiguous) {
      out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
    }
    out.flush();
    if (!out) {
      out.close();
      std::filesystem::remove(tmp);
      throw std::runtime_error(fmt::format("{}: write failed (disk full?)", tmp));
    }
  }
  std::error_code error;
  std::filesystem::rename(tmp, path, error);
  if (error) {  // e.g. path is a directory: the error names it, and no .tmp stays behind
    std::filesystem::remove(tmp);
    throw std::runtime_error(fmt::format("{}: cannot write ({})", path, error.message()));
  }
}

}  // namespace prge::io

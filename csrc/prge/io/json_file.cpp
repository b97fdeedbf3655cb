#include "prge/io/json_file.h"

#include <fmt/format.h>

#include <cctype>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

namespace prge::io {
namespace {

// The code unit of a \uXXXX escape starting at json[at] (the backslash); -1 when there is none.
int32_t escaped_unit(const std::string& json, size_t at) {
  if (at + 6 > json.size() || json[at] != '\\' || json[at + 1] != 'u') return -1;
  int32_t unit = 0;
  for (size_t i = at + 2; i < at + 6; ++i) {
    const char c = json[i];
    const int digit = c >= '0' && c <= '9'   ? c - '0'
                      : c >= 'a' && c <= 'f' ? c - 'a' + 10
                      : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                             : -1;
    if (digit < 0) return -1;
    unit = unit * 16 + digit;
  }
  return unit;
}

void append_utf8(std::string& out, uint32_t code_point) {  // code_point in [0x10000, 0x10FFFF]
  out += static_cast<char>(0xF0 | (code_point >> 18));
  out += static_cast<char>(0x80 | ((code_point >> 12) & 0x3F));
  out += static_cast<char>(0x80 | ((code_point >> 6) & 0x3F));
  out += static_cast<char>(0x80 | (code_point & 0x3F));
}

// JSON's number grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
bool is_json_number(const std::string& w) {
  size_t i = 0;
  const auto digits = [&] {
    const size_t start = i;
    while (i < w.size() && std::isdigit(static_cast<unsigned char>(w[i]))) ++i;
    return i > start;
  };
  if (i < w.size() && w[i] == '-') ++i;
  if (i < w.size() && w[i] == '0') {
    ++i;
  } else if (!digits()) {
    return false;
  }
  if (i < w.size() && w[i] == '.' && (++i, !digits())) return false;
  if (i < w.size() && (w[i] == 'e' || w[i] == 'E')) {
    ++i;
    if (i < w.size() && (w[i] == '+' || w[i] == '-')) ++i;
    if (!digits()) return false;
  }
  return i == w.size();
}

void refuse_repeated_keys(const YAML::Node& node, const std::string& path, const std::string& where) {
  if (node.IsSequence()) {
    for (size_t i = 0; i < node.size(); ++i) refuse_repeated_keys(node[i], path, fmt::format("{}[{}]", where, i));
  }
  if (!node.IsMap()) return;
  std::set<std::string> seen;
  for (const auto& entry : node) {
    const auto key = entry.first.Scalar();
    if (!seen.insert(key).second) {
      throw std::runtime_error(fmt::format("{}: key '{}' appears twice{} (Python's json, and so transformers, "
                                           "would take the last)",
                                           path, key, where.empty() ? "" : " in " + where));
    }
    refuse_repeated_keys(entry.second, path, where.empty() ? key : where + "." + key);
  }
}

}  // namespace

std::string json_text_for_yaml(const std::string& json) {
  std::string out;
  out.reserve(json.size());
  int64_t line = 1;
  size_t line_start = 0;
  auto fail = [&](size_t at, const std::string& what) {
    throw std::invalid_argument(fmt::format("line {}, column {}: {}", line, at - line_start + 1, what));
  };
  bool in_string = false;
  for (size_t i = 0; i < json.size();) {
    const char c = json[i];
    if (in_string) {
      if (c == '"') in_string = false;
      if (static_cast<unsigned char>(c) < 0x20) fail(i, "a control character inside a string");
      if (c != '\\' || i + 1 >= json.size()) {
        out += json[i++];
        continue;
      }
      const int32_t high = escaped_unit(json, i);
      const int32_t low = high >= 0xD800 && high <= 0xDBFF ? escaped_unit(json, i + 6) : -1;
      if (low >= 0xDC00 && low <= 0xDFFF) {
        const auto code_point = 0x10000 + ((static_cast<uint32_t>(high) - 0xD800) << 10);
        append_utf8(out, code_point + (static_cast<uint32_t>(low) - 0xDC00));
        i += 12;
      } else if (high >= 0xD800 && high <= 0xDFFF) {
        fail(i, fmt::format("a lone surrogate escape \\u{:04x} (no UTF-8 character)", high));
      } else if (std::strchr("\"\\/bfnrtu", json[i + 1]) && json[i + 1] != '\0') {
        out.append(json, i, 2);  // whole, so that an escaped backslash is never read as one's start
        i += 2;
      } else {  // YAML's own escapes (\x41, \U0001F600, \0, a backslash before a line break) are not JSON's
        const auto escaped = static_cast<unsigned char>(json[i + 1]);
        fail(i, std::isprint(escaped) ? fmt::format("'\\{}' is not a JSON escape", json[i + 1])
                                      : fmt::format("a backslash before byte 0x{:02x} is not a JSON escape", escaped));
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '\n' || (c == '\r' && (i + 1 == json.size() || json[i + 1] != '\n'))) {
      ++line;  // a lone \r ends a line for JSON and is no line end to yaml-cpp: given as \n
      line_start = i + 1;
      out += '\n';
      ++i;
      continue;
    } else if (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '+' || c == '.') {
      size_t end = i;
      while (end < json.size() && (std::isalnum(static_cast<unsigned char>(json[end])) || json[end] == '-' ||
                                   json[end] == '+' || json[end] == '.')) {
        ++end;
      }
      const std::string word = json.substr(i, end - i);
      static const std::set<std::string> literals{"true", "false", "null", "NaN", "Infinity", "-Infinity"};
      if (!literals.count(word) && !is_json_number(word)) {
        fail(i, fmt::format("'{}' is not a JSON value", word.size() > 40 ? word.substr(0, 40) + "..." : word));
      }
      out.append(word);
      i = end;
      continue;
    } else if (c == '\0' || !std::strchr("{}[],: \t\r", c)) {
      const auto shown = std::isprint(static_cast<unsigned char>(c))
                             ? fmt::format("'{}'", c)
                             : fmt::format("byte 0x{:02x}", static_cast<unsigned char>(c));
      fail(i, fmt::format("{} is not JSON (YAML's anchors, aliases, tags, comments and quotes are not read)", shown));
    }
    out += json[i++];
  }
  return out;
}

YAML::Node load_json_file(const std::string& path) {
  if (!std::filesystem::exists(path)) throw std::runtime_error(fmt::format("{}: model config not found", path));
  if (std::filesystem::is_directory(path)) {
    throw std::runtime_error(fmt::format("{}: is a directory, not a model config file", path));
  }
  std::ifstream file(path, std::ios::binary);
  std::stringstream text;
  text << file.rdbuf();
  if (!file) throw std::runtime_error(fmt::format("{}: cannot be read", path));
  YAML::Node json;
  try {
    json = YAML::Load(json_text_for_yaml(text.str()));
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(fmt::format("{}: not JSON: {}", path, e.what()));
  } catch (const YAML::Exception& e) {
    throw std::runtime_error(fmt::format("{}: malformed config.json: {}", path, e.what()));
  }
  refuse_repeated_keys(json, path, "");
  return json;
}

}  // namespace prge::io

#include "prge/io/json_file.h"
#include "prge/io/utf8.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace prge::io {
namespace {

constexpr size_t kMaxDepth = 400;  // nested objects and arrays read (yaml-cpp's own limit is ~500)

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

// JSON's structure, one token at a time (RFC 8259 section 2): where a key, a value, a ':' or a
// ',' may come. yaml-cpp reads more (a trailing comma, `{"a"}`, a number as a key, a second
// value after the first), and Python's json refuses all of it.
class JsonGrammar {
 public:
  // The token starting with `token` ('{', '}', '[', ']', ',', ':', '"' for a string, 'v' for any
  // other value) comes next. Returns what JSON expects here when it cannot come, "" when it can.
  std::string take(char token) {
    const bool value_here = state_ == State::kValue || state_ == State::kValueOrClose;
    const bool key_here = state_ == State::kKey || state_ == State::kKeyOrClose;
    const bool after_member = state_ == State::kCommaOrClose;
    const char open = open_.empty() ? '\0' : open_.back();
    switch (token) {
      case '{':
      case '[':
        if (!value_here) return expected();
        open_.push_back(token);
        state_ = token == '{' ? State::kKeyOrClose : State::kValueOrClose;
        return "";
      case '"':
        if (key_here) {
          state_ = State::kColon;
          return "";
        }
        if (!value_here) return expected();
        return after_value();
      case ':':
        if (state_ != State::kColon) return expected();
        state_ = State::kValue;
        return "";
      case ',':
        if (!after_member) return expected();
        state_ = open == '{' ? State::kKey : State::kValue;
        return "";
      case '}':
      case ']': {
        const char opener = token == '}' ? '{' : '[';
        const State empty = token == '}' ? State::kKeyOrClose : State::kValueOrClose;
        if (open != opener || (state_ != empty && !after_member)) return expected();
        open_.pop_back();
        return after_value();
      }
      default:
        if (!value_here) return expected();
        return after_value();
    }
  }

  bool expects_key() const { return state_ == State::kKey || state_ == State::kKeyOrClose; }
  size_t depth() const { return open_.size(); }
  bool complete() const { return state_ == State::kEnd; }

  // What JSON expects next, in words.
  std::string expected() const {
    const char open = open_.empty() ? '\0' : open_.back();
    switch (state_) {
      case State::kValue:
        return "a value";
      case State::kValueOrClose:
        return "a value or ']'";
      case State::kKey:
        return "a key (a string)";
      case State::kKeyOrClose:
        return "a key (a string) or '}'";
      case State::kColon:
        return "':'";
      case State::kCommaOrClose:
        return open == '{' ? "',' or '}'" : "',' or ']'";
      case State::kEnd:
        break;
    }
    return "the end of the file (one value per file)";
  }

 private:
  enum class State { kValue, kValueOrClose, kKey, kKeyOrClose, kColon, kCommaOrClose, kEnd };

  std::string after_value() {
    state_ = open_.empty() ? State::kEnd : State::kCommaOrClose;
    return "";
  }

  State state_ = State::kValue;
  std::vector<char> open_;  // '{' or '[' of each container open, outermost first
};

}  // namespace

void refuse_repeated_keys(const YAML::Node& node, const std::string& path, const std::string& where) {
  if (node.IsSequence()) {
    size_t i = 0;
    for (const auto& item : node) {  // only an object can repeat a key: scalars are not walked
      if (item.IsMap() || item.IsSequence()) refuse_repeated_keys(item, path, fmt::format("{}[{}]", where, i));
      ++i;
    }
  }
  if (!node.IsMap()) return;
  std::set<std::string> seen;
  for (const auto& entry : node) {
    const auto key = entry.first.Scalar();
    if (!seen.insert(key).second) {
      throw std::runtime_error(fmt::format("{}: key '{}' appears twice{} (Python's json would take the last)", path,
                                           key, where.empty() ? "" : " in " + where));
    }
    if (entry.second.IsMap() || entry.second.IsSequence()) {
      refuse_repeated_keys(entry.second, path, where.empty() ? key : where + "." + key);
    }
  }
}

std::string json_text_for_yaml(const std::string& json) {
  std::string out;
  out.reserve(json.size());
  int64_t line = 1;
  size_t line_start = 0;
  auto fail = [&](size_t at, const std::string& what) {  // the column in characters, as Python gives it
    const auto column = 1 + std::count_if(json.begin() + static_cast<std::ptrdiff_t>(line_start),
                                          json.begin() + static_cast<std::ptrdiff_t>(at),
                                          [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; });
    throw std::invalid_argument(fmt::format("line {}, column {}: {}", line, column, what));
  };
  JsonGrammar grammar;
  const auto take = [&](size_t at, char token, const std::string& shown) {
    const auto expected = grammar.take(token);
    if (!expected.empty()) fail(at, fmt::format("{} where JSON expects {}", shown, expected));
  };
  // A bare word (a number, true, NaN, ...) runs over these; whether it is JSON's is checked whole.
  const auto word_char = [](char ch) {
    return std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '+' || ch == '.';
  };
  bool in_string = false;
  size_t string_start = 0;
  for (size_t i = 0; i < json.size();) {
    const char c = json[i];
    if (in_string) {
      if (c == '"') in_string = false;
      if (static_cast<unsigned char>(c) < 0x20) fail(i, "a control character inside a string");
      if (static_cast<unsigned char>(c) >= 0x80) {  // yaml-cpp passes any bytes; Python's utf-8 codec does not
        const size_t length = utf8_length(json, i);
        if (length == 0) fail(i, fmt::format("byte 0x{:02x} is not UTF-8 here", static_cast<unsigned char>(c)));
        out.append(json, i, length);
        i += length;
        continue;
      }
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
      } else if (json[i + 1] == 'u' && high < 0) {
        fail(i, fmt::format("'{}' is not a JSON escape (\\u takes four hex digits)", json.substr(i, 6)));
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
      // Every key is given as YAML's explicit key, `? "key"`: yaml-cpp then reads a key over 1024
      // bytes and a line break before its ':', both of which JSON allows.
      if (grammar.expects_key()) out += "? ";
      take(i, '"', "a string");
      in_string = true;
      string_start = i;
    } else if (c == '\n' || (c == '\r' && (i + 1 == json.size() || json[i + 1] != '\n'))) {
      ++line;  // a lone \r ends a line for JSON and is no line end to yaml-cpp: given as \n
      line_start = i + 1;
      out += '\n';
      ++i;
      continue;
    } else if (word_char(c)) {
      size_t end = i;
      while (end < json.size() && word_char(json[end])) ++end;
      const std::string word = json.substr(i, end - i);
      const std::string shown = fmt::format("'{}'", word.size() > 40 ? word.substr(0, 40) + "..." : word);
      static const std::set<std::string> literals{"true", "false", "null", "NaN", "Infinity", "-Infinity"};
      if (!literals.count(word) && !is_json_number(word)) fail(i, shown + " is not a JSON value");
      take(i, 'v', shown);
      out.append(word);
      i = end;
      continue;
    } else if (c == '\0' || !std::strchr("{}[],: \t\r", c)) {
      const auto byte = static_cast<unsigned char>(c);
      const auto shown = c == '\''          ? std::string("a single quote")
                         : std::isprint(byte) ? fmt::format("'{}'", c)
                                              : fmt::format("byte 0x{:02x}", byte);
      const bool yaml = c != '\0' && std::strchr("&*!#~'|>%@`", c);
      fail(i, shown + (yaml ? " is not JSON (YAML's anchors, aliases, tags, comments and quotes are not read)"
                            : " is not JSON"));
    } else if (c != ' ' && c != '\t' && c != '\r') {
      if ((c == '{' || c == '[') && grammar.depth() >= kMaxDepth) {
        fail(i, fmt::format("more than {} nested objects and arrays (prge reads no deeper)", kMaxDepth));
      }
      take(i, c, fmt::format("'{}'", c));
    }
    out += json[i++];
  }
  if (in_string) fail(string_start, "this string is not closed");  // a line break in it was refused above
  if (!grammar.complete()) fail(json.size(), fmt::format("the file ends where JSON expects {}", grammar.expected()));
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
  return parse_json(text.str(), path);
}

YAML::Node parse_json(const std::string& text, const std::string& path, const std::string& what) {
  YAML::Node json;
  try {
    json = YAML::Load(json_text_for_yaml(text));
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(what.empty() ? fmt::format("{}: not JSON: {}", path, e.what())
                                          : fmt::format("{}: {} is not JSON: {}", path, what, e.what()));
  } catch (const YAML::Exception& e) {
    throw std::runtime_error(fmt::format("{}: malformed {}: {}", path, what.empty() ? "config.json" : what, e.what()));
  }
  refuse_repeated_keys(json, path, "");
  return json;
}

}  // namespace prge::io

#include "prge/config.h"

#include "prge/io/shown_text.h"
#include "prge/io/utf8.h"
#include "prge/io/yaml_scalars.h"
#include "prge/models/causal_lm.h"
#include "prge/perturbation.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/yaml.h>
#ifndef _WIN32
#include <pwd.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

namespace prge {

// adapter.alpha above this is no LoRA setting anyone means (the usual values are 8 to 64).
constexpr double kMaxAdapterAlpha = 1e4;
// More queries than this is no setting anyone means (P-RGE's gains level off at a few dozen;
// the cosine check against backprop uses 512), and more sequences in one forward than this
// would fail in the allocator minutes later instead of here.
constexpr int64_t kMaxQueries = 4096;
constexpr int64_t kMaxSequencesPerForward = 65536;
namespace {

// An override as applied: the node it wrote, and how messages name it (its whole place).
struct AppliedOverride {
  std::string key, origin;
  YAML::Node value;
};

// YAML's null: an empty value, ~, null (any case yaml-cpp reads), and a value tagged !!null,
// which yaml-cpp keeps as a tagged empty scalar.
bool is_null(const YAML::Node& node) {
  return node.IsNull() || (node.IsScalar() && (node.Tag() == "tag:yaml.org,2002:null" || node.Tag() == "!!null"));
}

// A path as Python's os.path.expanduser reads it: a leading "~" is the user's home directory ($HOME
// when set, else the account's) and "~name" that account's; any other path is returned as it is.
// An empty result means that home directory is unknown (the caller names the key).
std::string home_expanded(const std::string& path) {
  if (path.empty() || path[0] != '~') return path;
  const auto slash = path.find('/');
  const auto user = path.substr(1, slash == std::string::npos ? std::string::npos : slash - 1);
  const auto rest = slash == std::string::npos ? std::string() : path.substr(slash);
  std::optional<std::string> home;
  if (const char* env = std::getenv("HOME"); user.empty() && env != nullptr) home = env;
#ifndef _WIN32
  if (!home) {
    const passwd* entry = user.empty() ? getpwuid(getuid()) : getpwnam(user.c_str());
    if (entry != nullptr && entry->pw_dir != nullptr) home = entry->pw_dir;
  }
#endif
  if (!home) return {};
  while (!home->empty() && home->back() == '/') home->pop_back();
  const auto expanded = *home + rest;
  return expanded.empty() ? "/" : expanded;
}

using io::ends_with_space;
using io::shown_value;
using io::space_at;
using io::visible;

// The key's own node in a mapping, for messages about its value (an empty value's mark points
// past the key, to the next line).
YAML::Node key_of(const YAML::Node& mapping, const char* key) {
  for (const auto& item : mapping) {
    if (item.first.IsScalar() && item.first.Scalar() == key) return item.first;
  }
  return mapping[key];
}

// A config's text and the name its messages give it; a place in it as "name:line:column", the
// column in characters, as an editor counts them (yaml-cpp's marks count bytes).
struct Source {
  std::string name, text;

  std::string where(const YAML::Mark& mark) const {
    if (mark.line < 0) return name;
    int64_t column = mark.column;
    if (mark.pos >= mark.column && static_cast<size_t>(mark.pos) <= text.size()) {
      column = 0;  // UTF-8 continuation bytes (10xxxxxx) do not start a character
      for (auto i = static_cast<size_t>(mark.pos - mark.column); i < static_cast<size_t>(mark.pos); ++i) {
        column += (static_cast<unsigned char>(text[i]) & 0xC0) != 0x80;
      }
    }
    return fmt::format("{}:{}:{}", name, mark.line + 1, column + 1);
  }
};

class Reader {
 public:
  explicit Reader(Source source) : source_(std::move(source)) {}

  [[noreturn]] void fail(const YAML::Node& node, const std::string& key, const std::string& what) const {
    throw ConfigError(located(node, key, what));
  }

  // A section's validate() error ("optimizer.lr must be >= 0") at the key it names, where the
  // section has that key (so that a value --set or a sweep's grid wrote is named as theirs); at
  // the section otherwise.
  [[noreturn]] void fail_invalid(const YAML::Node& section, const std::string& section_name, const std::string& what) const {
    const auto prefix = section_name + ".";
    if (what.rfind(prefix, 0) == 0 && section.IsMap()) {
      const auto end = what.find_first_not_of("abcdefghijklmnopqrstuvwxyz_", prefix.size());
      const auto key = what.substr(prefix.size(), end == std::string::npos ? std::string::npos : end - prefix.size());
      if (!key.empty() && section[key]) {
        const auto start = end == std::string::npos ? end : what.find_first_not_of(" :", end);
        fail(section[key], prefix + key, start == std::string::npos ? what : what.substr(start));
      }
    }
    fail(section, section_name, what);
  }

  // "file:line:col: key: what" for a node of the file; "file: --set KEY: key: what" for a value
  // an override wrote (or a key below it, or a section it created).
  std::string located(const YAML::Node& node, const std::string& key, const std::string& what) const {
    return fmt::format("{}: {}", place(node, key), what);
  }

  // "file:line:col: key" (escaped: visible), or the override's origin that wrote it ("file: --set KEY", a sweep's
  // "sweep:line:col: grid KEY"), followed by the key when it lies below the override's.
  std::string place(const YAML::Node& node, const std::string& key) const {
    const auto mark = node.IsDefined() ? node.Mark() : YAML::Mark::null_mark();
    for (auto it = applied_.rbegin(); it != applied_.rend(); ++it) {  // the last one to write a key wrote its value
      const auto& o = *it;
      const bool wrote = (node.IsDefined() && node.is(o.value)) || key == o.key || key.rfind(o.key + ".", 0) == 0 ||
                         (mark.line < 0 && o.key.rfind(key + ".", 0) == 0);
      if (wrote) return key == o.key ? o.origin : fmt::format("{}: {}", o.origin, visible(key));
    }
    const auto where = source_.where(mark);
    return fmt::format("{}: {}", where, visible(key));  // a key's no-break space shown as \u00a0
  }

  // The place of every key read with read(), for RunConfig::places.
  const std::map<std::string, std::string>& places() const { return places_; }

  const std::string& source() const { return source_.name; }
  void applied(AppliedOverride o) { applied_.push_back(std::move(o)); }

  void check_keys(const YAML::Node& node, const std::string& section,
                  const std::vector<std::string>& allowed) const {
    if (!node.IsMap()) fail(node, section, "expected a mapping of keys");
    for (const auto& item : node) {
      const auto key = item.first.Scalar();
      if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
        fail(item.first, section.empty() ? key : section + "." + key,
             fmt::format("unknown key (allowed: {})", fmt::join(allowed, ", ")));
      }
    }
  }

  // Records where a key that read() does not read was written (a mapping such as adapter.rank_pattern).
  void note_place(const YAML::Node& node, const std::string& path) const { places_[path] = place(node, path); }

  template <typename T>
  void read(const YAML::Node& section, const std::string& section_name, const char* key, T& out) const {
    const auto node = section[key];
    if (!node) return;
    const auto path = section_name + "." + key;
    places_[path] = place(node, path);
    if (is_null(node)) fail(key_of(section, key), path, kNoValue);
    if (!node.IsScalar()) {
      fail(node, path, node.IsMap() ? "expected a single value, got a mapping (YAML reads {...} unquoted as one: "
                                      "quote the text, e.g. '\"{question}\"')"
                                    : "expected a single value");
    }
    try {
      out = io::scalar_as<T>(node);
    } catch (const std::invalid_argument&) {
      fail(node, path, fmt::format("expected {}, got {}", type_name<T>(), shown_value(node.Scalar())));
    }
  }

  // A file or directory key: read() and then expand_path (a leading "~" expanded; whitespace around
  // or alone refused: it would name a file whose spaces no message shows).
  void read_path(const YAML::Node& section, const std::string& section_name, const char* key,
                 std::string& out) const {
    read(section, section_name, key, out);
    try {
      out = expand_path(out);
    } catch (const std::invalid_argument& e) {
      fail(section[key], section_name + "." + key, e.what());
    }
  }

  void read_list(const YAML::Node& section, const std::string& section_name, const char* key,
                 std::vector<std::string>& out) const {
    const auto node = section[key];
    if (!node) return;
    if (is_null(node)) fail(key_of(section, key), section_name + "." + key, kNoValue);
    if (!node.IsSequence()) fail(node, section_name + "." + key, "expected a list");
    note_place(node, section_name + "." + key);
    out.clear();
    for (const auto& item : node) {
      if (is_null(item)) fail(key_of(section, key), section_name + "." + key, "an empty item (YAML reads '-' alone as null)");
      if (!item.IsScalar()) fail(item, section_name + "." + key, "expected a list of names");
      out.push_back(item.Scalar());
    }
  }

  template <typename Parse>
  void read_choice(const YAML::Node& section, const std::string& section_name, const char* key,
                   Parse parse) const {
    if (!section[key]) return;
    std::string value;
    read(section, section_name, key, value);
    if (value.empty()) fail(section[key], section_name + "." + key, "empty; leave the key out for its default");
    try {
      parse(value);
    } catch (const std::invalid_argument& e) {
      fail(section[key], section_name + "." + key, e.what());
    }
  }

  template <typename T>
  static const char* type_name() {
    if constexpr (std::is_same_v<T, bool>) return "true or false";
    else if constexpr (std::is_integral_v<T> && std::is_unsigned_v<T>) return "a non-negative integer";
    else if constexpr (std::is_integral_v<T>) return "an integer";
    else if constexpr (std::is_floating_point_v<T>) return "a finite number";
    else return "a string";
  }

 private:
  Source source_;
  std::vector<AppliedOverride> applied_;
  mutable std::map<std::string, std::string> places_;
};

// What yaml-cpp found wrong: its own depth limit's exception carries the message "bad file".
std::string yaml_problem(const YAML::ParserException& e) {
  if (dynamic_cast<const YAML::DeepRecursion*>(&e) != nullptr) {
    return fmt::format("nested more than {} levels deep (the YAML parser stopped at its own limit)", kMaxYamlDepth);
  }
  return e.msg;
}

// Walking an alias inside the node it names never ends (a stack overflow), nor in practice one of
// aliases of aliases: refused before any walk (kMaxYamlDepth, kMaxYamlValues in config.h).
void check_yaml_size(const YAML::Node& node, const std::string& where, int depth, int64_t& nodes) {
  if (depth > kMaxYamlDepth || ++nodes > kMaxYamlValues) {
    throw ConfigError(fmt::format("{}: the YAML is nested more than {} levels deep or holds more than {} values "
                                  "(an alias inside the node it names, or aliases of aliases?)",
                                  where, kMaxYamlDepth, kMaxYamlValues));
  }
  if (node.IsMap()) {
    for (const auto& item : node) {
      check_yaml_size(item.first, where, depth + 1, nodes);
      check_yaml_size(item.second, where, depth + 1, nodes);
    }
  } else if (node.IsSequence()) {
    for (const auto& item : node) check_yaml_size(item, where, depth + 1, nodes);
  }
}

void check_yaml_size(const YAML::Node& node, const std::string& where) {
  int64_t nodes = 0;
  check_yaml_size(node, where, 0, nodes);
}

// yaml-cpp keeps both entries of a repeated key and looks up the first: a second one would be
// ignored without a word. Every mapping of the file is checked, nested ones too.
// yaml-cpp reads a double-quoted scalar's escapes \_ (U+00A0, no-break space) and \N (U+0085) as
// the one byte 0xA0 / 0x85 instead of UTF-8, which Python cannot decode; the text it read is
// UTF-8 (checked before), so such a byte outside a UTF-8 sequence is one of them: written as
// UTF-8 in every scalar of the tree (keys too).
void mend_yaml_escapes(YAML::Node node) {
  if (node.IsScalar()) {
    const std::string& text = node.Scalar();
    std::string out;
    for (size_t at = 0; at < text.size();) {
      const auto byte = static_cast<unsigned char>(text[at]);
      if (byte < 0x80) {
        out += text[at++];
      } else if (const auto length = io::utf8_length(text, at)) {
        out.append(text, at, length);
        at += length;
      } else {
        if (byte == 0xA0 || byte == 0x85) out += '\xC2';
        out += text[at++];
      }
    }
    if (out != text) node = out;
  } else if (node.IsMap()) {
    for (auto item : node) {
      mend_yaml_escapes(item.first);
      mend_yaml_escapes(item.second);
    }
  } else if (node.IsSequence()) {
    for (auto item : node) mend_yaml_escapes(item);
  }
}

void check_duplicate_keys(const YAML::Node& node, const std::string& path, const Source& source) {
  if (node.IsMap()) {
    std::map<std::string, YAML::Mark> seen;
    for (const auto& item : node) {
      const auto key = item.first.IsScalar() ? item.first.Scalar() : std::string();
      const auto dotted = path.empty() ? key : path + "." + key;
      if (item.first.IsScalar()) {
        const auto [first, inserted] = seen.emplace(key, item.first.Mark());
        if (!inserted) {
          throw ConfigError(fmt::format("{}: {}: duplicate key: it is also at line {} (a key may appear once; "
                                        "which value would count is not what the file says)",
                                        source.where(item.first.Mark()), dotted, first->second.line + 1));
        }
      }
      check_duplicate_keys(item.second, dotted, source);
    }
  } else if (node.IsSequence()) {
    for (const auto& item : node) check_duplicate_keys(item, path, source);
  }
}


// Applies `KEY=VALUE` to the parsed mapping: sections on the way are created (or replace a
// null), VALUE is read as YAML 1.2 by yaml-cpp.
void apply_override(YAML::Node& root, const ConfigOverride& override_, Reader& reader) {
  const auto where =
      override_.origin.empty() ? fmt::format("{}: --set {}", reader.source(), visible(override_.key)) : override_.origin;
  const auto parts = key_path(override_.key);
  if (parts.empty()) {
    throw ConfigError(fmt::format("{}: '{}' is not a key (expected section.key, e.g. estimator.queries; a key "
                                  "that holds a dot in double quotes: data.label_words.\"1.5\")",
                                  where, override_.key));
  }
  YAML::Node value;
  try {
    value = YAML::Load(override_.value);
    check_yaml_size(value, fmt::format("{}: {}", where, shown_value(override_.value)));
    mend_yaml_escapes(value);
  } catch (const YAML::ParserException& e) {
    throw ConfigError(
        fmt::format("{}: {}: the value is not valid YAML ({})", where, shown_value(override_.value), yaml_problem(e)));
  }
  try {
    check_duplicate_keys(value, override_.key, Source{"the value", override_.value});
  } catch (const ConfigError& e) {
    throw ConfigError(fmt::format("{}: {}: {}", where, shown_value(override_.value), e.what()));
  }
  YAML::Node node(root);  // rebound with reset(), never assigned: assignment would write the tree
  std::string prefix;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    prefix += (i ? "." : "") + parts[i];
    YAML::Node child(node[parts[i]]);
    if (!child.IsDefined() || is_null(child)) {
      node[parts[i]] = YAML::Node(YAML::NodeType::Map);
      child.reset(node[parts[i]]);
    } else if (!child.IsMap()) {
      throw ConfigError(fmt::format("{}: '{}' is not a section", where, prefix));
    }
    node.reset(child);
  }
  node[parts.back()] = value;
  reader.applied({fmt::format("{}", fmt::join(parts, ".")), where, value});  // as the reader spells keys
}

// A section of the file; left out, an empty mapping (its keys' defaults). Null is no section.
YAML::Node section_of(const Reader& reader, const YAML::Node& root, const char* name) {
  if (!root[name]) return YAML::Node(YAML::NodeType::Map);
  if (is_null(root[name])) reader.fail(key_of(root, name), name, kNoValue);
  return root[name];
}

// adapter.rank_pattern / alpha_pattern: a mapping of PEFT module patterns to values, in order.
template <typename T, typename Parse>
void read_pattern(const Reader& reader, const YAML::Node& adapter, const char* key,
                  std::vector<std::pair<std::string, T>>& out, const char* expected, Parse parse) {
  const auto node = adapter[key];
  if (!node) return;
  const auto name = std::string("adapter.") + key;
  reader.note_place(node, name);
  if (is_null(node)) reader.fail(key_of(adapter, key), name, kNoValue);
  if (!node.IsMap()) reader.fail(node, name, "expected a mapping of module pattern -> value, e.g. {q_proj: 8}");
  for (const auto& item : node) {
    T value{};
    bool ok = false;
    try {
      ok = item.second.IsScalar() && parse(item.second, value);
    } catch (const std::invalid_argument&) {
    }
    if (!item.first.IsScalar() || is_null(item.first) || item.first.Scalar().empty()) {
      reader.fail(item.first, name, "a module pattern may not be empty");
    }
    if (is_null(item.second)) reader.fail(item.first, name + "." + item.first.Scalar(), kNoValue);
    if (!ok) reader.fail(item.second, name + "." + item.first.Scalar(), expected);
    out.emplace_back(item.first.Scalar(), value);
  }
}

// The keys of `task: custom`: only with that task, and then a complete description of it.
// What needs the data itself (fields present, labels inside label_words) is checked when
// the files are read.
void read_custom_task(const Reader& reader, const YAML::Node& data, DataOptions& d, std::vector<std::string>& warnings) {
  const std::vector<std::string> keys = {"train_file", "eval_file", "template", "label_field",
                                         "label_words", "response_field", "choices_field", "chat_template"};
  if (!d.custom()) {
    for (const auto& key : keys) {
      if (data[key]) reader.fail(data[key], "data." + key, fmt::format("applies to task: custom only (task is '{}')", d.task));
    }
    return;
  }
  reader.read_path(data, "data", "train_file", d.train_file);
  reader.read_path(data, "data", "eval_file", d.eval_file);
  reader.read(data, "data", "template", d.prompt_template);
  reader.read(data, "data", "label_field", d.label_field);
  reader.read(data, "data", "response_field", d.response_field);
  reader.read(data, "data", "choices_field", d.choices_field);
  reader.read(data, "data", "chat_template", d.chat_template);
  if (const auto words = data["label_words"]; words && !is_null(words)) {
    if (!words.IsMap() || words.size() == 0) {
      reader.fail(words, "data.label_words", "expected a mapping of label value -> label word, e.g. {positive: \" positive\"}");
    }
    for (const auto& item : words) {
      if (!item.first.IsScalar() || is_null(item.first) || item.first.Scalar().empty()) {
        reader.fail(item.first, "data.label_words", "a label value may not be empty");
      }
      if (is_null(item.second)) reader.fail(item.first, "data.label_words." + item.first.Scalar(), kNoValue);
      if (!item.second.IsScalar() || item.second.Scalar().empty()) {
        reader.fail(item.second, "data.label_words." + item.first.Scalar(),
                    item.second.IsMap() ? "expected a non-empty label word, got a mapping (a --set or grid path "
                                          "to a label that holds a dot quotes it: data.label_words.\"1.5\")"
                                        : "expected a non-empty label word");
      }
      if (item.second.Scalar().find_first_not_of(" \t\r\n") == std::string::npos) {
        reader.fail(item.second, "data.label_words." + item.first.Scalar(),
                    "a label word of whitespace only scores the space after the prompt, not a class");
      }
      for (const auto& [label, word] : d.label_words) {
        if (word == item.second.Scalar()) {
          reader.fail(item.second, "data.label_words." + item.first.Scalar(),
                      fmt::format("label word '{}' is also the word of label '{}': two classes with one word "
                                  "can never be told apart; give each label its own word",
                                  word, label));
        }
      }
      d.label_words.emplace_back(item.first.Scalar(), item.second.Scalar());
    }
    if (d.label_words.size() == 1) {  // accuracy 1 by construction
      reader.fail(words, "data.label_words", "one label word: classification picks among at least two");
    }
  }
  // A label word glued to the template's last character ("Sentiment:" + "positive"): almost always
  // a missing space (MeZO's words start with one); said, not refused (a template may mean it).
  // ASCII on both sides only: a template ending in a field ('}') ends in unknown text, and words
  // of scripts written without spaces (Chinese, Japanese) follow their prompt directly.
  const auto last = d.prompt_template.empty() ? 0 : static_cast<unsigned char>(d.prompt_template.back());
  if (!d.chat_template && last > 0x20 && last < 0x80 && last != '}' && data["label_words"]) {
    for (const auto& item : data["label_words"]) {
      const auto& word = item.second.Scalar();
      if (std::isalnum(static_cast<unsigned char>(word.front()))) {
        warnings.push_back(reader.located(
            item.second, "data.label_words." + item.first.Scalar(),
            fmt::format("'{}' follows the template's last character '{}' without a space, so the model reads "
                        "'...{}{}'; label words usually start with one (' {}')", word, d.prompt_template.back(),
                        d.prompt_template.back(), word, word)));
        break;
      }
    }
  }
  // The other way round: a template ending in a space before candidates appended after one (README,
  // lm-evaluation-harness's target delimiter) or label words that start with one: two spaces.
  if (!d.chat_template && !d.prompt_template.empty() && (d.prompt_template.back() == ' ' || d.prompt_template.back() == '\t')) {
    std::string doubled;
    if (!d.choices_field.empty()) doubled = "each multiple-choice candidate is appended after a space";
    for (const auto& [label, word] : d.label_words) {
      if (doubled.empty() && !word.empty() && std::isspace(static_cast<unsigned char>(word.front()))) {
        doubled = fmt::format("label word '{}' starts with whitespace", word);
      }
    }
    if (!doubled.empty()) {
      warnings.push_back(reader.located(data["template"], "data.template",
                                        fmt::format("ends in whitespace and {}, so the model reads whitespace twice "
                                                    "before the answer; end the template without it", doubled)));
    }
  }
  // Present and empty: never what the task means (the kind fields not chosen may be "", as every-key output writes them).
  for (const auto& key : {"train_file", "eval_file", "template", "label_field"}) {
    if (data[key] && data[key].Scalar().empty()) {  // read() above refused a null or a non-scalar
      reader.fail(data[key], std::string("data.") + key, "empty (task: custom reads a file, template or field name here)");
    }
  }
  // train_from: validation trains on a seeded part of the eval file: a training file is not read. Said, and
  // dropped (not written back), so that a run stored with one (required before) reads as the same run.
  const bool from_validation = d.train_from == "validation";
  if (from_validation && !d.train_file.empty()) {
    warnings.push_back(reader.located(
        data["train_file"], "data.train_file",
        "is not read with data.train_from: validation, which trains on a seeded part of data.eval_file's records "
        "and evaluates the rest; leave data.train_file out, or train on it with data.train_from: train"));
    d.train_file.clear();
  }
  // What is missing is blamed on `task: custom`, in the file or the --set that wrote it.
  std::vector<std::string> missing;
  for (const auto& [key, value] : {std::pair{"train_file", &d.train_file}, {"eval_file", &d.eval_file},
                                   {"template", &d.prompt_template}}) {
    if (value->empty() && !(from_validation && value == &d.train_file)) missing.push_back(std::string("data.") + key);
  }
  if (!missing.empty()) {
    reader.fail(data["task"], "data.task", fmt::format("task: custom needs {}", fmt::join(missing, ", ")));
  }
  // None given is blamed on the task; two, on the second as the mapping orders them (a --set's
  // new key comes last).
  std::vector<std::string> kinds;
  for (const auto& item : data) {
    const auto key = item.first.Scalar();
    const bool given = key == "label_words" ? !is_null(item.second) : !is_null(item.second) && !item.second.Scalar().empty();
    if (given && (key == "label_words" || key == "response_field" || key == "choices_field")) kinds.push_back(key);
  }
  if (kinds.size() != 1) {
    const auto key = kinds.empty() ? std::string("task") : kinds[1];
    reader.fail(data[key], "data." + key,
                "task: custom needs exactly one of data.label_words (classification), data.response_field "
                "(generation) or data.choices_field (multiple choice)");
  }
}

}  // namespace

std::string expand_path(const std::string& value) {
  if (value.empty()) return value;
  size_t start = 0;
  while (const auto* space = space_at(value, start)) start += std::strlen(space->bytes);
  if (start == value.size()) {
    throw std::invalid_argument(fmt::format("'{}' is only whitespace: name a path, or leave the key out", visible(value)));
  }
  if (start > 0 || ends_with_space(value)) {
    throw std::invalid_argument(fmt::format("'{}' starts or ends with whitespace: a path is taken as written, so remove "
                                            "it (a file name with such spaces is not supported here)", visible(value)));
  }
  const auto expanded = home_expanded(value);
  if (expanded.empty()) {
    throw std::invalid_argument(fmt::format(
        "'{}': {} (the path starts with ~)", value,
        value.size() > 1 && value[1] != '/' ? "no such user" : "no home directory (HOME is not set and the account has none)"));
  }
  return expanded;
}

std::vector<std::string> key_path(const std::string& dotted) {
  std::vector<std::string> parts;
  size_t at = 0;
  while (true) {
    std::string part;
    if (at < dotted.size() && dotted[at] == '"') {
      const auto close = dotted.find('"', at + 1);
      if (close == std::string::npos) return {};
      part = dotted.substr(at + 1, close - at - 1);
      at = close + 1;
      if (at < dotted.size() && dotted[at] != '.') return {};
    } else {
      const auto dot = std::min(dotted.find('.', at), dotted.size());
      part = dotted.substr(at, dot - at);
      at = dot;
    }
    if (part.empty()) return {};
    parts.push_back(part);
    if (at == dotted.size()) return parts;
    ++at;  // the dot
  }
}

RunConfig parse_run_config(const std::string& yaml_text, const std::string& source,
                           const std::vector<ConfigOverride>& overrides) {
  const Source text{source, yaml_text};
  Reader reader(text);
  YAML::Node root;
  std::vector<YAML::Node> documents;
  try {
    documents = YAML::LoadAll(yaml_text);
    root = documents.empty() ? YAML::Node() : documents[0];
    check_yaml_size(root, source);
    mend_yaml_escapes(root);
  } catch (const YAML::ParserException& e) {
    throw ConfigError(fmt::format("{}: malformed YAML: {}", text.where(e.mark), yaml_problem(e)));
  }
  // Empty (or only comments) is an error with or without overrides: it is never the file meant.
  if (!root || root.IsNull()) throw ConfigError(fmt::format("{}: the config is empty", source));
  if (documents.size() > 1) {
    throw ConfigError(fmt::format("{}: a second YAML document (after '---'): a config is one document, and the "
                                  "reader would ignore what follows",
                                  text.where(documents[1].Mark())));
  }
  if (!root.IsMap()) {
    throw ConfigError(fmt::format("{}: expected a mapping of sections (model:, estimator:, ...), got a YAML {}",
                                  text.where(root.Mark()), root.IsSequence() ? "list" : "scalar"));
  }
  check_duplicate_keys(root, "", text);
  for (const auto& item : root) {  // a null section is no section (adapter: null is none), overridden or not
    if (item.first.Scalar() != "adapter" && is_null(item.second)) reader.fail(item.first, item.first.Scalar(), kNoValue);
  }
  for (const auto& o : overrides) apply_override(root, o, reader);
  reader.check_keys(root, "", {"model", "adapter", "estimator", "optimizer", "data", "run"});

  RunConfig c;
  const auto model = section_of(reader, root, "model");
  reader.check_keys(model, "model", {"name", "dtype", "device", "quantize", "group_size", "fold_lora_a",
                                      "gated_low_rank_kernel"});
  reader.read_choice(model, "model", "quantize", [&](const std::string& v) {
    if (v != "none" && v != "dense" && v != "int8" && v != "int4") {
      throw std::invalid_argument("allowed: none, dense, int8, int4");
    }
    c.model.quantize = v;
  });
  reader.read(model, "model", "group_size", c.model.group_size);
  if (c.model.group_size < 0 || (c.model.group_size > 0 && c.model.quantize != "int8" && c.model.quantize != "int4")) {
    reader.fail(model["group_size"], "model.group_size",
                "a positive group of columns per scale, with model.quantize int8 or int4");
  }
  reader.read(model, "model", "fold_lora_a", c.model.fold_lora_a);
  reader.read(model, "model", "gated_low_rank_kernel", c.model.gated_low_rank_kernel);
  reader.read_path(model, "model", "name", c.model.name);
  reader.read_choice(model, "model", "dtype", [&](const std::string& v) {
    parse_dtype(v);
    c.model.dtype = dtype_name(parse_dtype(v));
  });
  reader.read(model, "model", "device", c.model.device);
  try {
    torch::Device device(c.model.device);
    (void)device;
  } catch (const std::exception&) {
    reader.fail(model["device"], "model.device",
                fmt::format("{} is not a device (examples: cpu, cuda, cuda:1)", shown_value(c.model.device)));
  }

  if (root["adapter"] && is_null(root["adapter"])) {
    c.use_adapter = false;
  } else {
    const auto adapter = section_of(reader, root, "adapter");
    reader.check_keys(adapter, "adapter", {"rank", "alpha", "targets", "init_seed", "init_from", "use_rslora",
                                           "rank_pattern", "alpha_pattern"});
    reader.read(adapter, "adapter", "rank", c.adapter.rank);
    reader.read(adapter, "adapter", "alpha", c.adapter.alpha);
    reader.read_list(adapter, "adapter", "targets", c.adapter.targets);
    reader.read(adapter, "adapter", "init_seed", c.adapter.init_seed);
    reader.read_path(adapter, "adapter", "init_from", c.adapter.init_from);
    reader.read(adapter, "adapter", "use_rslora", c.adapter.use_rslora);
    read_pattern(reader, adapter, "rank_pattern", c.adapter.rank_pattern, "expected an integer rank >= 1",
                 [&](const YAML::Node& node, auto& value) {
      value = io::scalar_as<int64_t>(node);
      return value >= 1;
    });
    const auto alpha_range = fmt::format("expected a number in (0, {:g}]", kMaxAdapterAlpha);
    read_pattern(reader, adapter, "alpha_pattern", c.adapter.alpha_pattern, alpha_range.c_str(),
                 [&](const YAML::Node& node, auto& value) {
      value = io::scalar_as<double>(node);
      return value > 0.0 && value <= kMaxAdapterAlpha;
    });
    if (c.adapter.rank < 1) reader.fail(adapter["rank"], "adapter.rank", "must be >= 1");
    if (!(c.adapter.alpha > 0.0 && c.adapter.alpha <= kMaxAdapterAlpha)) {
      reader.fail(adapter["alpha"], "adapter.alpha",
                  fmt::format("must be in (0, {:g}] (the LoRA scaling is alpha / rank; 0 would train nothing)",
                              kMaxAdapterAlpha));
    }
    // The model's family decides finally (Phi-3's fused qkv_proj / gate_up_proj), at load.
    auto names = projection_names();
    names.insert(names.end(), {"qkv_proj", "gate_up_proj"});
    for (const auto& t : c.adapter.targets) {
      if (std::find(names.begin(), names.end(), t) == names.end()) {
        reader.fail(adapter["targets"], "adapter.targets",
                    fmt::format("unknown projection {} (allowed: {})", shown_value(t), fmt::join(names, ", ")));
      }
    }
  }

  const auto est = section_of(reader, root, "estimator");
  reader.check_keys(est, "estimator",
                    {"kind", "queries", "epsilon", "difference", "parallel", "distribution", "rng"});
  reader.read_choice(est, "estimator", "kind",
                     [&](const std::string& v) { c.estimator.kind = parse_estimator_kind(v); });
  if (c.estimator.kind == EstimatorKind::Mezo) c.estimator.parallel = Parallelism::Sequential;
  if (c.estimator.kind == EstimatorKind::Fzoo) {  // its defaults; explicit other values fail validate()
    c.estimator.difference = Difference::Forward;
    c.estimator.distribution = NoiseDistribution::Rademacher;
  }
  reader.read(est, "estimator", "queries", c.estimator.queries);
  reader.read(est, "estimator", "epsilon", c.estimator.epsilon);
  reader.read_choice(est, "estimator", "difference",
                     [&](const std::string& v) { c.estimator.difference = parse_difference(v); });
  reader.read_choice(est, "estimator", "parallel", [&](const std::string& v) {
    c.estimator.parallel = parse_parallelism(v);
    const auto deprecated = deprecated_parallelism(v);
    if (!deprecated.empty()) c.warnings.push_back(reader.located(est["parallel"], "estimator.parallel", deprecated));
  });
  reader.read_choice(est, "estimator", "distribution", [&](const std::string& v) {
    c.estimator.distribution = parse_noise_distribution(v);
  });
  reader.read_choice(est, "estimator", "rng",
                     [&](const std::string& v) { c.estimator.rng = parse_noise_rng(v); });
  try {
    c.estimator.validate();
  } catch (const std::invalid_argument& e) {
    reader.fail_invalid(est, "estimator", e.what());
  }
  if (c.estimator.queries > kMaxQueries) {
    reader.fail(est["queries"], "estimator.queries",
                fmt::format("{} exceeds {}: each query costs a forward of the batch (P-RGE's gains level off at a "
                            "few dozen queries)", c.estimator.queries, kMaxQueries));
  }
  // Below these, a LoRA-FA perturbation moves the activations by less than the dtype's rounding
  // and g = (L+ - L-) / 2 eps is mostly rounding noise (H200, SmolLM2-135M on Fine Food:
  // correlation of bf16 g with fp32 g 0.49 at eps 1e-3, 0.98 at 1e-2;
  // experiments/results/precision/precision_soundness.md).
  constexpr double kBfloat16EpsilonFloor = 1e-2, kFloat16EpsilonFloor = 1e-3;
  const double floor = c.model.dtype == "bfloat16" ? kBfloat16EpsilonFloor
                       : c.model.dtype == "float16" ? kFloat16EpsilonFloor
                                                     : 0.0;
  if (c.estimator.kind != EstimatorKind::Mezo && c.estimator.kind != EstimatorKind::FirstOrder &&
      c.estimator.epsilon < floor) {
    c.warnings.push_back(reader.located(
        est["epsilon"] ? est["epsilon"] : est, "estimator.epsilon",
        fmt::format("{:g} with model.dtype {}: the ± perturbations of B change the activations by less than {} "
                    "rounding, so the projected gradients are mostly noise (measured: correlation with float32 "
                    "0.49 at 1e-3 in bfloat16); use epsilon >= {:g} or float32",
                    c.estimator.epsilon, c.model.dtype, c.model.dtype, floor)));
  }
  // MeZO's weight-sized noise under the counter RNG: one kernel per weight in a CUDA build on a
  // CUDA device, many ATen ops elsewhere.
  if (c.estimator.kind == EstimatorKind::Mezo && c.estimator.rng == NoiseRng::Counter &&
      (!torch::Device(c.model.device).is_cuda() || !cuda_kernels_built())) {
    c.warnings.push_back(reader.located(
        est["rng"] ? est["rng"] : est, "estimator.rng",
        fmt::format("counter with estimator.kind mezo on {}{}: without prge's CUDA kernels the counter RNG draws "
                    "MeZO's weight-sized noise with many ATen ops, measured about 11x slower than the torch "
                    "generator on a CPU (rng: auto takes torch there)",
                    c.model.device, torch::Device(c.model.device).is_cuda() ? " (a build without CUDA kernels)" : "")));
  }
  // MeZO adds lr · g · z to every weight in place in model.dtype: at MeZO's learning rates most of
  // these updates are below half a bfloat16 / float16 step of the weight (measured on a tiny random
  // Llama, 3 steps: 5 % of the weights changed at lr 1e-6, 42 % at 1e-5, 93 % at 1e-4 in bfloat16;
  // all of them in float32).
  if (c.estimator.kind == EstimatorKind::Mezo && floor > 0.0) {
    c.warnings.push_back(reader.located(
        model["dtype"] ? model["dtype"] : model, "model.dtype",
        fmt::format("{} with estimator.kind mezo: MeZO updates every weight in place in this dtype, and at its "
                    "learning rates most updates lr * g * z are smaller than half the dtype's rounding step and are "
                    "lost (measured in bfloat16: 5 % of weights changed at lr 1e-6, 42 % at 1e-5, 93 % at 1e-4; "
                    "all in float32{}); train MeZO in float32", c.model.dtype,
                    c.model.dtype == "float16" ? "; float16's rounding step is 8 times finer than bfloat16's" : "")));
  }
  if (c.estimator.kind == EstimatorKind::Mezo) {
    if (!c.adapter.init_from.empty()) {
      reader.fail(section_of(reader, root, "adapter")["init_from"], "adapter.init_from",
                  "a PEFT adapter to start from, and estimator.kind mezo trains every weight without adapters "
                  "(start MeZO from a merged model instead: prge adapters export RUN --merge, or PEFT's "
                  "merge_and_unload, then model.name: that directory)");
    }
    c.use_adapter = false;  // MeZO tunes every weight; adapters would only slow it down
  } else if (!c.use_adapter) {
    reader.fail(key_of(root, "adapter"), "adapter",
                fmt::format("null (no adapters) is for estimator.kind mezo; '{}' trains LoRA-FA B",
                            to_string(c.estimator.kind)));
  } else if (c.adapter.targets.empty()) {
    reader.fail(section_of(reader, root, "adapter")["targets"], "adapter.targets",
                fmt::format("empty; estimator.kind '{}' trains LoRA-FA B of these projections",
                            to_string(c.estimator.kind)));
  }
  if (c.model.fold_lora_a && !c.use_adapter) {
    reader.fail(model["fold_lora_a"], "model.fold_lora_a",
                "true folds LoRA-FA's A under W, and estimator.kind mezo trains every weight without adapters "
                "(set it false or leave it out)");
  }
  if (c.model.fold_lora_a && c.estimator.kind == EstimatorKind::FirstOrder) {
    c.warnings.push_back(reader.located(model["fold_lora_a"], "model.fold_lora_a",
                                        "true with estimator.kind first_order: its steps run under autograd, where "
                                        "the projections take the unfolded path, so the fold serves evaluation only"));
  }

  const auto opt = section_of(reader, root, "optimizer");
  reader.check_keys(opt, "optimizer", {"kind", "lr", "momentum", "betas", "eps", "weight_decay", "schedule",
                                       "warmup_steps", "accumulate"});
  reader.read_choice(opt, "optimizer", "kind",
                     [&](const std::string& v) { c.optimizer.kind = parse_optimizer_kind(v); });
  reader.read(opt, "optimizer", "lr", c.optimizer.lr);
  reader.read(opt, "optimizer", "momentum", c.optimizer.momentum);
  if (opt["betas"]) {
    std::vector<std::string> betas;
    reader.read_list(opt, "optimizer", "betas", betas);
    if (betas.size() != 2) reader.fail(opt["betas"], "optimizer.betas", "expected two numbers [beta1, beta2]");
    try {
      c.optimizer.beta1 = io::scalar_as<double>(opt["betas"][0]);
      c.optimizer.beta2 = io::scalar_as<double>(opt["betas"][1]);
    } catch (const std::invalid_argument&) {
      reader.fail(opt["betas"], "optimizer.betas", "expected two numbers [beta1, beta2]");
    }
  }
  reader.read(opt, "optimizer", "eps", c.optimizer.adam_eps);
  reader.read(opt, "optimizer", "weight_decay", c.optimizer.weight_decay);
  reader.read_choice(opt, "optimizer", "schedule",
                     [&](const std::string& v) { c.optimizer.schedule = parse_lr_schedule(v); });
  reader.read(opt, "optimizer", "warmup_steps", c.optimizer.warmup_steps);
  reader.read(opt, "optimizer", "accumulate", c.optimizer.accumulate);
  try {
    c.optimizer.validate();
  } catch (const std::invalid_argument& e) {
    reader.fail_invalid(opt, "optimizer", e.what());
  }
  const OptimizerOptions plain;  // Adam's own settings set for another kind: named, not applied
  if (c.optimizer.kind != OptimizerKind::Adam) {
    if (opt["betas"] && (c.optimizer.beta1 != plain.beta1 || c.optimizer.beta2 != plain.beta2)) {
      c.warnings.push_back(reader.located(opt["betas"], "optimizer.betas",
                                          fmt::format("applies to kind adam; kind {} does not read it",
                                                      to_string(c.optimizer.kind))));
    }
    if (opt["eps"] && c.optimizer.adam_eps != plain.adam_eps) {
      c.warnings.push_back(reader.located(opt["eps"], "optimizer.eps",
                                          fmt::format("applies to kind adam; kind {} does not read it",
                                                      to_string(c.optimizer.kind))));
    }
  }

  const auto data = section_of(reader, root, "data");
  reader.check_keys(data, "data", {"task", "data_dir", "protocol", "train_examples", "dev_examples",
                                   "eval_examples", "batch_size", "max_length", "train_from", "train_file",
                                   "eval_file", "template", "label_field", "label_words", "response_field",
                                   "choices_field", "chat_template"});
  reader.read(data, "data", "task", c.data.task);
  reader.read_path(data, "data", "data_dir", c.data.data_dir);
  reader.read_choice(data, "data", "protocol", [&](const std::string& v) {
    if (v != "paper" && v != "mezo") throw std::invalid_argument(fmt::format("unknown protocol {} (allowed: paper, mezo)", shown_value(v)));
    c.data.protocol = v;
  });
  reader.read_choice(data, "data", "train_from", [&](const std::string& v) {
    if (v != "train" && v != "validation") {
      throw std::invalid_argument(fmt::format("unknown train_from {} (allowed: train, validation)", shown_value(v)));
    }
    c.data.train_from = v;
  });
  reader.read(data, "data", "train_examples", c.data.train_examples);
  reader.read(data, "data", "dev_examples", c.data.dev_examples);
  reader.read(data, "data", "eval_examples", c.data.eval_examples);
  reader.read(data, "data", "batch_size", c.data.batch_size);
  reader.read(data, "data", "max_length", c.data.max_length);
  for (auto [key, value] : {std::pair{"train_examples", c.data.train_examples},
                            {"dev_examples", c.data.dev_examples},
                            {"eval_examples", c.data.eval_examples},
                            {"batch_size", c.data.batch_size},
                            {"max_length", c.data.max_length}}) {
    if (value < 1) reader.fail(data[key], std::string("data.") + key, "must be >= 1");
  }
  read_custom_task(reader, data, c.data, c.warnings);
  {  // sequences of one batched forward: the batch repeated for every point evaluated at once
    const int64_t q = c.estimator.queries;
    const bool central = c.estimator.difference == Difference::Central;
    const int64_t points = c.estimator.kind == EstimatorKind::FirstOrder        ? 1
                           : c.estimator.parallel == Parallelism::Dual          ? (central ? 2 * q : q + 1)
                           : c.estimator.parallel == Parallelism::Queries       ? q
                                                                                 : 1;
    if (c.data.batch_size > kMaxSequencesPerForward / points) {
      reader.fail(data["batch_size"] ? data["batch_size"] : est, "data.batch_size",
                  fmt::format("{} x {} points of estimator.queries {} (parallel {}) is {:.0f} sequences in one forward, "
                              "more than {}: lower data.batch_size or estimator.queries, or use parallel: sequential",
                              c.data.batch_size, points, q, to_string(c.estimator.parallel),
                              static_cast<double>(c.data.batch_size) * static_cast<double>(points),
                              kMaxSequencesPerForward));
    }
  }

  const auto run = section_of(reader, root, "run");
  reader.check_keys(run, "run", {"steps", "seed", "eval_every", "log_every", "checkpoint_every", "checkpoint_format",
                                   "data_parallel", "output_dir"});
  reader.read(run, "run", "steps", c.run.steps);
  reader.read(run, "run", "seed", c.run.seed);
  reader.read(run, "run", "eval_every", c.run.eval_every);
  reader.read(run, "run", "log_every", c.run.log_every);
  reader.read(run, "run", "checkpoint_every", c.run.checkpoint_every);
  reader.read(run, "run", "checkpoint_format", c.run.checkpoint_format);
  reader.read(run, "run", "data_parallel", c.run.data_parallel);
  reader.read_path(run, "run", "output_dir", c.run.output_dir);
  if (c.run.steps < 0) reader.fail(run["steps"], "run.steps", "must be >= 0");
  if (c.run.eval_every < 0) reader.fail(run["eval_every"], "run.eval_every", "must be >= 0");
  if (c.run.log_every < 1) reader.fail(run["log_every"], "run.log_every", "must be >= 1");
  if (c.run.checkpoint_every < 0) reader.fail(run["checkpoint_every"], "run.checkpoint_every", "must be >= 0");
  if (c.run.data_parallel < 1) reader.fail(run["data_parallel"], "run.data_parallel", "must be >= 1");
  if (c.run.checkpoint_format != "weights" && c.run.checkpoint_format != "updates") {
    reader.fail(run["checkpoint_format"], "run.checkpoint_format",
                fmt::format("weights or updates, got {}", shown_value(c.run.checkpoint_format)));
  }
  if (c.run.checkpoint_format == "updates" && c.estimator.kind != EstimatorKind::Mezo) {
    reader.fail(run["checkpoint_format"], "run.checkpoint_format",
                "updates replays full-parameter MeZO's steps (estimator.kind: mezo); the adapters other estimators "
                "train are small enough to store: weights");
  }
  if (c.run.output_dir.empty()) {
    reader.fail(run["output_dir"], "run.output_dir", "must name a directory (empty would write into the working directory)");
  }
  c.optimizer.total_steps = c.run.steps;  // the schedule runs over this run's updates
  // Settings under which training does nothing, or nearly nothing, are mistakes.
  if (c.run.steps > 0 && c.optimizer.accumulate > c.run.steps) {
    reader.fail(opt["accumulate"], "optimizer.accumulate",
                fmt::format("{} exceeds run.steps = {}: no update would ever be applied", c.optimizer.accumulate,
                            c.run.steps));
  }
  if (c.run.steps > 0 && c.run.steps % c.optimizer.accumulate != 0) {
    const auto left = c.run.steps % c.optimizer.accumulate;
    reader.fail(opt["accumulate"], "optimizer.accumulate",
                fmt::format("{} does not divide run.steps = {}: the last {} step(s) would spend forward passes on "
                            "estimates that no update applies (run.steps {} or {})",
                            c.optimizer.accumulate, c.run.steps, left, c.run.steps - left,
                            c.run.steps - left + c.optimizer.accumulate));
  }
  if (c.run.steps > 0 && c.optimizer.warmup_steps > c.optimizer.total_updates()) {
    reader.fail(opt["warmup_steps"], "optimizer.warmup_steps",
                fmt::format("{} exceeds the run's {} updates (run.steps / optimizer.accumulate): the learning rate "
                            "would never reach optimizer.lr",
                            c.optimizer.warmup_steps, c.optimizer.total_updates()));
  }
  if (c.run.steps > 0 && c.optimizer.lr == 0.0) {
    reader.fail(opt["lr"], "optimizer.lr",
                fmt::format("0 with run.steps = {}: no update would change a weight; for a run that only "
                            "evaluates, set run.steps: 0", c.run.steps));
  }
  c.places = reader.places();
  return c;
}

int64_t ModelOptions::effective_group_size() const { return weight_format(quantize, group_size).group_size; }

RunConfig load_run_config(const std::string& path) {
  if (!std::filesystem::exists(path)) throw ConfigError(fmt::format("{}: config file not found", path));
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  auto content = text.str();
  if (content.rfind("\xEF\xBB\xBF", 0) == 0) content.erase(0, 3);  // a UTF-8 byte-order mark
  return parse_run_config(content, path);
}

namespace {
// YAML text without YAML::Emitter: the emitter formats through std::ostream, whose locale
// facets crashed inside the extension on the GPU image (as Node::as<number> did); fmt
// formats numbers itself.
std::string yaml_string(const std::string& v) {
  std::string out = "\"";
  for (char c : v) {
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\r') out += "\\r";
    else {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
  }
  return out + "\"";
}

std::string yaml_double(double v) {
  std::string s = fmt::format("{}", v);  // shortest round-trip form
  if (s.find_first_of(".ein") == std::string::npos) return s + ".0";
  const auto e = s.find('e');
  if (e != std::string::npos && s.find('.') == std::string::npos) s.insert(e, ".0");  // 1e-05 -> 1.0e-05 (YAML 1.1 float)
  return s;
}
}  // namespace

std::string RunConfig::load_quantize() const {
  return estimator.kind == EstimatorKind::Mezo && model.quantize == "none" ? "dense" : model.quantize;
}

std::string RunConfig::to_yaml(bool every_key) const {
  std::string y;
  y += fmt::format("model:\n  name: {}\n  dtype: {}\n  device: {}\n", yaml_string(model.name),
                   model.dtype, yaml_string(model.device));
  if (every_key) {
    y += fmt::format("  quantize: {}\n  group_size: {}\n", model.quantize, model.effective_group_size());
    if (load_quantize() != model.quantize) {
      y.insert(y.find("  group_size:") - 1, "  # mezo: a checkpoint's own quantized blocks load dequantized");
    }
  } else if (model.quantize != "none") {  // written only when set, so configs stored before the key read the same
    y += fmt::format("  quantize: {}\n  group_size: {}\n", model.quantize, model.group_size);
  }
  if (every_key || model.fold_lora_a) y += fmt::format("  fold_lora_a: {}\n", model.fold_lora_a ? "true" : "false");
  if (every_key || !model.gated_low_rank_kernel) {  // written when off, so configs stored before the key read the same
    y += fmt::format("  gated_low_rank_kernel: {}\n", model.gated_low_rank_kernel ? "true" : "false");
  }
  if (use_adapter) {
    std::vector<std::string> targets;
    for (const auto& t : adapter.targets) targets.push_back(yaml_string(t));
    y += fmt::format("adapter:\n  rank: {}\n  alpha: {}\n  targets: [{}]\n  init_seed: {}\n",
                     adapter.rank, yaml_double(adapter.alpha), fmt::join(targets, ", "), adapter.init_seed);
    if (every_key || !adapter.init_from.empty()) y += fmt::format("  init_from: {}\n", yaml_string(adapter.init_from));
    if (every_key || adapter.use_rslora) y += fmt::format("  use_rslora: {}\n", adapter.use_rslora ? "true" : "false");
    if (every_key || !adapter.rank_pattern.empty()) {
      std::vector<std::string> items;
      for (const auto& [k, v] : adapter.rank_pattern) items.push_back(fmt::format("{}: {}", yaml_string(k), v));
      y += fmt::format("  rank_pattern: {{{}}}\n", fmt::join(items, ", "));
    }
    if (every_key || !adapter.alpha_pattern.empty()) {
      std::vector<std::string> items;
      for (const auto& [k, v] : adapter.alpha_pattern) items.push_back(fmt::format("{}: {}", yaml_string(k), yaml_double(v)));
      y += fmt::format("  alpha_pattern: {{{}}}\n", fmt::join(items, ", "));
    }
  } else {
    y += "adapter: null\n";
  }
  y += fmt::format(
      "estimator:\n  kind: {}\n  queries: {}\n  epsilon: {}\n  difference: {}\n  parallel: {}\n"
      "  distribution: {}\n  rng: {}\n",
      to_string(estimator.kind), estimator.queries, yaml_double(estimator.epsilon),
      to_string(estimator.difference), to_string(estimator.parallel),
      to_string(estimator.distribution), to_string(estimator.rng));
  if (every_key && estimator.rng == NoiseRng::Auto) {  // what auto means for this device and estimator
    const auto resolved = resolve_noise_rng(estimator.rng, torch::Device(model.device),
                                            estimator.kind != EstimatorKind::Mezo);
    const bool no_kernels = torch::Device(model.device).is_cuda() && !cuda_kernels_built();
    y.insert(y.size() - 1, fmt::format("  # {} on {}{}", to_string(resolved), model.device,
                                       no_kernels ? " (this build has no CUDA kernels)" : ""));
  }
  y += fmt::format(
      "optimizer:\n  kind: {}\n  lr: {}\n  momentum: {}\n  betas: [{}, {}]\n  eps: {}\n  weight_decay: {}\n"
      "  schedule: {}\n  warmup_steps: {}\n  accumulate: {}\n",
      to_string(optimizer.kind), yaml_double(optimizer.lr), yaml_double(optimizer.momentum),
      yaml_double(optimizer.beta1), yaml_double(optimizer.beta2), yaml_double(optimizer.adam_eps),
      yaml_double(optimizer.weight_decay), to_string(optimizer.schedule), optimizer.warmup_steps,
      optimizer.accumulate);
  y += fmt::format(
      "data:\n  task: {}\n  data_dir: {}\n  protocol: {}\n  train_examples: {}\n  dev_examples: {}\n"
      "  eval_examples: {}\n  batch_size: {}\n  max_length: {}\n  train_from: {}\n",
      yaml_string(data.task), yaml_string(data.data_dir), data.protocol, data.train_examples,
      data.dev_examples, data.eval_examples, data.batch_size, data.max_length, data.train_from);
  if (data.custom()) {
    // no training file under train_from: validation (an empty one would be refused on reading)
    if (!data.train_file.empty()) y += fmt::format("  train_file: {}\n", yaml_string(data.train_file));
    y += fmt::format("  eval_file: {}\n  template: {}\n  label_field: {}\n", yaml_string(data.eval_file),
                     yaml_string(data.prompt_template), yaml_string(data.label_field));
    std::vector<std::string> words;
    for (const auto& [label, word] : data.label_words) words.push_back(yaml_string(label) + ": " + yaml_string(word));
    if (every_key) {  // the kind's key with its value, the other two empty (null: no label words)
      y += words.empty() ? std::string("  label_words: null\n")
                         : fmt::format("  label_words: {{{}}}\n", fmt::join(words, ", "));
      y += fmt::format("  response_field: {}\n  choices_field: {}\n", yaml_string(data.response_field),
                       yaml_string(data.choices_field));
    } else if (!words.empty()) {
      y += fmt::format("  label_words: {{{}}}\n", fmt::join(words, ", "));
    } else if (!data.choices_field.empty()) {
      y += fmt::format("  choices_field: {}\n", yaml_string(data.choices_field));
    } else {
      y += fmt::format("  response_field: {}\n", yaml_string(data.response_field));
    }
    y += fmt::format("  chat_template: {}\n", data.chat_template ? "true" : "false");
  }
  y += fmt::format(
      "run:\n  steps: {}\n  seed: {}\n  eval_every: {}\n  log_every: {}\n  checkpoint_every: {}\n  data_parallel: {}\n"
      "  output_dir: {}\n",
      run.steps, run.seed, run.eval_every, run.log_every, run.checkpoint_every, run.data_parallel,
      yaml_string(run.output_dir));
  // written when set, so configs stored before the key read the same
  if (every_key || run.checkpoint_format != "weights") y += fmt::format("  checkpoint_format: {}\n", run.checkpoint_format);
  return y;
}

}  // namespace prge

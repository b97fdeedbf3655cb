#include "prge/adapter_options.h"

#include <fmt/format.h>

#include <cmath>
#include <regex>
#include <stdexcept>

namespace prge {

const std::vector<std::string>& projection_names() {
  static const std::vector<std::string> names{"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                              "gate_proj", "up_proj", "down_proj"};
  return names;
}

namespace {
// PEFT's get_pattern_key: the first key K of `patterns` such that the module name matches
// (.*\.)?(K)$ from its start.
template <typename T>
const std::pair<std::string, T>* pattern_for(const std::vector<std::pair<std::string, T>>& patterns,
                                             const std::string& module) {
  for (const auto& entry : patterns) {
    try {
      if (std::regex_match(module, std::regex("(.*\\.)?(" + entry.first + ")"))) return &entry;
    } catch (const std::regex_error& e) {
      throw std::invalid_argument(fmt::format("adapter pattern '{}' is not a regular expression: {}", entry.first,
                                              e.what()));
    }
  }
  return nullptr;
}
}  // namespace

int64_t AdapterOptions::rank_of(const std::string& module) const {
  const auto* match = pattern_for(rank_pattern, module);
  return match ? match->second : rank;
}

double AdapterOptions::scaling_of(const std::string& module) const {
  const auto* match = pattern_for(alpha_pattern, module);
  const double a = match ? match->second : alpha;
  const auto r = static_cast<double>(rank_of(module));
  return use_rslora ? a / std::sqrt(r) : a / r;
}

}  // namespace prge

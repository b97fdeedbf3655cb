#pragma once
// Scalar conversion for yaml-cpp nodes without iostreams. yaml-cpp's Node::as<int/double>
// goes through std::istream and its locale facets, which crashed inside the extension on a
// machine whose torch links its own libstdc++ pieces; strtoll/strtod have no such state.
#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace prge::io {

template <typename T>
T scalar_as(const YAML::Node& node) {
  if (!node.IsScalar()) throw std::invalid_argument("not a scalar");
  const std::string& text = node.Scalar();
  if constexpr (std::is_same_v<T, std::string>) {
    return text;
  } else if constexpr (std::is_same_v<T, bool>) {
    if (text == "true" || text == "True" || text == "TRUE") return true;
    if (text == "false" || text == "False" || text == "FALSE") return false;
    throw std::invalid_argument("not a boolean: " + text);
  } else {
    if (text.empty()) throw std::invalid_argument("empty value");
    char* end = nullptr;
    errno = 0;
    T value{};
    if constexpr (std::is_floating_point_v<T>) {
      value = static_cast<T>(std::strtod(text.c_str(), &end));
    } else if constexpr (std::is_signed_v<T>) {
      value = static_cast<T>(std::strtoll(text.c_str(), &end, 10));
    } else {
      if (text.front() == '-') throw std::invalid_argument("negative value: " + text);
      value = static_cast<T>(std::strtoull(text.c_str(), &end, 10));
    }
    // strtod's ERANGE on underflow (1e-310, 1e-400) comes with the nearest subnormal or zero, as
    // Python reads it; on overflow it comes with HUGE_VAL, refused below.
    const bool underflow = std::is_floating_point_v<T> && errno == ERANGE && std::fabs(static_cast<double>(value)) < 1;
    if ((errno != 0 && !underflow) || end == text.c_str() || *end != '\0') {
      if constexpr (std::is_integral_v<T>) {  // 64.0 or 1e3 where a count is expected
        if (errno == ERANGE && end != text.c_str() && *end == '\0') {
          throw std::invalid_argument("out of range of a 64-bit integer: " + text);
        }
        char* real_end = nullptr;
        std::strtod(text.c_str(), &real_end);
        if (real_end != text.c_str() && *real_end == '\0') throw std::invalid_argument("not an integer: " + text);
      }
      throw std::invalid_argument("not a number: " + text);
    }
    if constexpr (std::is_floating_point_v<T>) {
      if (!std::isfinite(value)) throw std::invalid_argument("not a finite number: " + text);
    }
    return value;
  }
}

// A JSON value (config.json, read as YAML): as scalar_as, but a JSON string such as "8" where a
// number or boolean is expected is refused, as Python's json and transformers keep it a str
// (yaml-cpp tags a quoted scalar "!", a plain one "?").
template <typename T>
T json_scalar_as(const YAML::Node& node) {
  if constexpr (!std::is_same_v<T, std::string>) {
    if (node.IsScalar() && node.Tag() == "!") {
      throw std::invalid_argument("the string \"" + node.Scalar() + "\" where a " +
                                  (std::is_same_v<T, bool> ? "boolean" : "number") + " is expected");
    }
  }
  return scalar_as<T>(node);
}

}  // namespace prge::io

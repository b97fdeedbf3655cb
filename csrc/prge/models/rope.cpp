#include "prge/models/rope.h"

#include "prge/io/shown_text.h"
#include "prge/io/yaml_scalars.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <stdexcept>

namespace prge {

std::string to_string(RopeType type) {
  switch (type) {
    case RopeType::Default: return "default";
    case RopeType::Linear: return "linear";
    case RopeType::Dynamic: return "dynamic";
    case RopeType::Llama3: return "llama3";
    case RopeType::Yarn: return "yarn";
    case RopeType::LongRope: return "longrope";
  }
  return "?";
}

int64_t RopeParameters::rescaled_beyond() const {
  if (type == RopeType::Dynamic) return max_position_embeddings;
  if (type == RopeType::LongRope) return original_max_position_embeddings;
  return std::numeric_limits<int64_t>::max();
}

bool RopeParameters::operator==(const RopeParameters& o) const {
  return type == o.type && theta == o.theta && factor == o.factor &&
         max_position_embeddings == o.max_position_embeddings &&
         original_max_position_embeddings == o.original_max_position_embeddings &&
         low_freq_factor == o.low_freq_factor && high_freq_factor == o.high_freq_factor &&
         beta_fast == o.beta_fast && beta_slow == o.beta_slow && truncate == o.truncate &&
         attention_factor == o.attention_factor && short_factor == o.short_factor && long_factor == o.long_factor;
}

namespace {

bool present(const YAML::Node& node, const char* key) { return node[key] && !node[key].IsNull(); }

// Keys some rope type reads; any other key inside rope_parameters / rope_scaling is refused.
const std::set<std::string>& known_keys() {
  static const std::set<std::string> keys{
      "rope_type",      "type",           "rope_theta",  "factor",         "original_max_position_embeddings",
      "low_freq_factor", "high_freq_factor", "beta_fast", "beta_slow",      "attention_factor",
      "mscale",         "mscale_all_dim", "truncate",    "short_factor",   "long_factor",
      "partial_rotary_factor"};
  return keys;
}

RopeType parse_rope_type(const std::string& name, const std::string& where) {
  if (name == "default") return RopeType::Default;
  if (name == "linear") return RopeType::Linear;
  if (name == "dynamic") return RopeType::Dynamic;
  if (name == "llama3") return RopeType::Llama3;
  if (name == "yarn") return RopeType::Yarn;
  if (name == "longrope") return RopeType::LongRope;
  throw std::runtime_error(fmt::format(
      "{}: rope type {} is not supported (supported: default, linear, dynamic, llama3, yarn, longrope)", where,
      io::shown_value(name)));
}

// yarn's attention factor when the config gives none (transformers' get_mscale).
double yarn_mscale(double scale, double mscale) { return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0; }

torch::Tensor frequency_exponents(int64_t dim) {  // (0, 2, 4, ...) / dim, float32
  return torch::arange(0, dim, 2, torch::kInt64).to(torch::kFloat32) / static_cast<double>(dim);
}

torch::Tensor plain_inverse_frequencies(double base, int64_t dim) {
  return 1.0 / torch::pow(base, frequency_exponents(dim));
}

}  // namespace

RopeParameters read_rope_parameters(const YAML::Node& config, const std::string& path, int64_t head_dim,
                                    int64_t max_position_embeddings, double default_theta,
                                    const std::string& layer_type, const RopeOptions& options) {
  // transformers reads the legacy rope_scaling first when both are present (`rope_scaling or
  // rope_parameters`: an empty mapping counts as none).
  auto given = [&](const char* key) {
    return present(config, key) && !(config[key].IsMap() && config[key].size() == 0);
  };
  const char* section = given("rope_scaling") ? "rope_scaling" : given("rope_parameters") ? "rope_parameters" : nullptr;
  YAML::Node dict;
  std::string where = path;
  if (section) {
    // reset, not =: assigning to a yaml-cpp node that refers into a tree rewrites the tree.
    dict.reset(config[section]);
    where = fmt::format("{}: {}", path, section);
    if (!dict.IsMap()) throw std::runtime_error(fmt::format("{}: expected a mapping", where));
    const YAML::Node& view = dict;
    if (!layer_type.empty() && view[layer_type]) {
      dict.reset(view[layer_type]);
      where = fmt::format("{}.{}", where, layer_type);
      if (!dict.IsMap()) throw std::runtime_error(fmt::format("{}: expected a mapping", where));
    }
    for (const auto& entry : dict) {
      const auto key = entry.first.as<std::string>();
      if (!known_keys().count(key)) {
        throw std::runtime_error(fmt::format("{}: field {} is not supported (prge reads: rope_type, rope_theta, "
                                             "factor and the parameters of its rope type)",
                                             where, io::shown_value(key)));
      }
    }
  }
  // A config value as T, or a runtime_error prefixed with `label` (where it is).
  auto value_as = [](auto type, const YAML::Node& node, const std::string& label) {
    try {
      return io::json_scalar_as<decltype(type)>(node);
    } catch (const std::exception& e) {
      throw std::runtime_error(fmt::format("{}: {}", label, e.what()));
    }
  };
  auto number = [&](const YAML::Node& node, const char* key, const std::string& at) {
    return value_as(0.0, node[key], fmt::format("{}: {}", at, key));
  };
  auto numbers = [&](const char* key) {
    std::vector<double> out;
    if (!present(dict, key) || !dict[key].IsSequence()) {
      throw std::runtime_error(fmt::format("{}: longrope needs a list '{}'", where, key));
    }
    for (const auto& v : dict[key]) {
      out.push_back(value_as(0.0, v, fmt::format("{}: {}: entry {}", where, key, out.size())));
    }
    return out;
  };

  RopeParameters rope;
  rope.max_position_embeddings = max_position_embeddings;
  std::string type = "default";
  if (dict && present(dict, "rope_type")) type = io::scalar_as<std::string>(dict["rope_type"]);
  else if (dict && present(dict, "type")) type = io::scalar_as<std::string>(dict["type"]);
  for (const auto& [from, to] : options.aliases) {
    if (type == from) type = to;
  }
  rope.type = parse_rope_type(type, fmt::format("{}: rope_type", where));

  rope.theta = default_theta;
  std::string theta_at = where;  // the place its value came from, for the message below
  if (present(config, "rope_theta")) rope.theta = number(config, "rope_theta", theta_at = path);
  if (dict && present(dict, "rope_theta")) rope.theta = number(dict, "rope_theta", theta_at = where);
  if (!(rope.theta > 0.0)) {  // every inverse frequency is theta^(-2i/d)
    throw std::runtime_error(fmt::format("{}: rope_theta {} is not a number > 0", theta_at, rope.theta));
  }
  for (const auto& [node, at] : {std::pair{config, path}, std::pair{dict, where}}) {
    if (!options.allow_partial_rotation && node && present(node, "partial_rotary_factor") &&
        number(node, "partial_rotary_factor", at) != 1.0) {
      throw std::runtime_error(fmt::format(
          "{}: partial_rotary_factor {} is not supported (prge rotates the whole head)", at,
          io::scalar_as<std::string>(node["partial_rotary_factor"])));
    }
  }
  if (rope.type == RopeType::Default) return rope;

  auto need = [&](const char* key) {
    if (!present(dict, key)) {
      throw std::runtime_error(fmt::format("{}: rope type '{}' needs '{}'", where, type, key));
    }
    return number(dict, key, where);
  };
  const bool uses_original = rope.type == RopeType::Llama3 || rope.type == RopeType::Yarn ||
                             rope.type == RopeType::LongRope;
  if (uses_original) {
    // As transformers: a top-level original_max_position_embeddings (Phi-3 writes one) wins.
    // A position count: a fraction or a value past 2^53 would be cut by the cast (transformers
    // computes with 64.5 as given), so it is refused.
    auto positions = [&](const YAML::Node& node, const std::string& at) {
      const double value = number(node, "original_max_position_embeddings", at);
      if (value != std::floor(value) || std::fabs(value) > 9007199254740992.0) {
        throw std::runtime_error(fmt::format("{}: original_max_position_embeddings: {} is not a whole number "
                                             "of positions", at, io::scalar_as<std::string>(
                                                                     node["original_max_position_embeddings"])));
      }
      return static_cast<int64_t>(value);
    };
    if (present(config, "original_max_position_embeddings")) {
      rope.original_max_position_embeddings = positions(config, path);
    } else if (options.class_original_max_position_embeddings > 0) {
      rope.original_max_position_embeddings = options.class_original_max_position_embeddings;
    } else if (present(dict, "original_max_position_embeddings")) {
      rope.original_max_position_embeddings = positions(dict, where);
    } else {
      rope.original_max_position_embeddings = max_position_embeddings;
    }
    if (rope.original_max_position_embeddings <= 0) {
      throw std::runtime_error(fmt::format("{}: rope type '{}' needs original_max_position_embeddings > 0 "
                                           "(or max_position_embeddings)", where, type));
    }
  }
  switch (rope.type) {
    case RopeType::Default: break;
    case RopeType::Linear: rope.factor = need("factor"); break;
    case RopeType::Dynamic:
      rope.factor = need("factor");
      if (max_position_embeddings <= 0) {
        throw std::runtime_error(fmt::format("{}: dynamic RoPE needs max_position_embeddings", path));
      }
      break;
    case RopeType::Llama3:
      rope.factor = need("factor");
      rope.low_freq_factor = need("low_freq_factor");
      rope.high_freq_factor = need("high_freq_factor");
      if (!(rope.high_freq_factor > rope.low_freq_factor)) {
        throw std::runtime_error(fmt::format("{}: llama3 RoPE needs high_freq_factor > low_freq_factor", where));
      }
      break;
    case RopeType::Yarn: {
      rope.factor = present(dict, "factor")
                        ? number(dict, "factor", where)
                        : static_cast<double>(max_position_embeddings) / rope.original_max_position_embeddings;
      // As transformers reads them (`get("beta_fast") or 32`): 0 means the default; a rotation
      // count below 0 has no correction dimension (a log of a negative number).
      for (auto [key, beta] : {std::pair{"beta_fast", &rope.beta_fast}, std::pair{"beta_slow", &rope.beta_slow}}) {
        const double value = present(dict, key) ? number(dict, key, where) : 0.0;
        if (value < 0.0) throw std::runtime_error(fmt::format("{}: {} {} is not a number of rotations >= 0", where, key, value));
        if (value != 0.0) *beta = value;
      }
      if (present(dict, "truncate")) rope.truncate = value_as(false, dict["truncate"], where + ": truncate");
      if (present(dict, "attention_factor")) {
        rope.attention_factor = number(dict, "attention_factor", where);
      } else {
        const double mscale = present(dict, "mscale") ? number(dict, "mscale", where) : 0.0;
        const double mscale_all_dim = present(dict, "mscale_all_dim") ? number(dict, "mscale_all_dim", where) : 0.0;
        rope.attention_factor = mscale != 0.0 && mscale_all_dim != 0.0
                                    ? yarn_mscale(rope.factor, mscale) / yarn_mscale(rope.factor, mscale_all_dim)
                                    : yarn_mscale(rope.factor, 1.0);
      }
      break;
    }
    case RopeType::LongRope: {
      rope.short_factor = numbers("short_factor");
      rope.long_factor = numbers("long_factor");
      for (const auto* list : {&rope.short_factor, &rope.long_factor}) {
        if (static_cast<int64_t>(list->size()) != head_dim / 2) {
          throw std::runtime_error(fmt::format("{}: longrope factors need head_dim / 2 = {} entries, got {}", where,
                                               head_dim / 2, list->size()));
        }
      }
      rope.factor = present(dict, "factor")
                        ? number(dict, "factor", where)
                        : static_cast<double>(max_position_embeddings) / rope.original_max_position_embeddings;
      if (present(dict, "attention_factor")) {
        rope.attention_factor = number(dict, "attention_factor", where);
      } else {
        rope.attention_factor =
            rope.factor <= 1.0 ? 1.0
                               : std::sqrt(1.0 + std::log(rope.factor) /
                                                     std::log(static_cast<double>(rope.original_max_position_embeddings)));
      }
      break;
    }
  }
  if (!(rope.factor > 0.0)) throw std::runtime_error(fmt::format("{}: factor must be > 0", where));
  return rope;
}

torch::Tensor rope_inverse_frequencies(const RopeParameters& rope, int64_t dim, int64_t seq_len,
                                       const torch::Device& device) {
  torch::Tensor inv_freq;
  switch (rope.type) {
    case RopeType::Default: inv_freq = plain_inverse_frequencies(rope.theta, dim); break;
    case RopeType::Linear: inv_freq = plain_inverse_frequencies(rope.theta, dim) / rope.factor; break;
    case RopeType::Dynamic: {
      if (seq_len <= rope.max_position_embeddings) {
        inv_freq = plain_inverse_frequencies(rope.theta, dim);
        break;
      }
      // transformers computes the grown base in float32 (its length is a tensor).
      auto length = torch::tensor(static_cast<float>(seq_len));
      auto grown = rope.theta * torch::pow(rope.factor * length / static_cast<double>(rope.max_position_embeddings) -
                                               (rope.factor - 1.0),
                                           static_cast<double>(dim) / static_cast<double>(dim - 2));
      inv_freq = 1.0 / torch::pow(grown, frequency_exponents(dim));
      break;
    }
    case RopeType::Llama3: {
      auto base = plain_inverse_frequencies(rope.theta, dim);
      const double old_context = static_cast<double>(rope.original_max_position_embeddings);
      const double low_wavelen = old_context / rope.low_freq_factor;
      const double high_wavelen = old_context / rope.high_freq_factor;
      auto wavelen = (2.0 * M_PI) / base;
      auto scaled = torch::where(wavelen > low_wavelen, base / rope.factor, base);
      auto smooth = (old_context / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor);
      auto smoothed = (1.0 - smooth) * scaled / rope.factor + smooth * scaled;
      auto medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen);
      inv_freq = torch::where(medium, smoothed, scaled);
      break;
    }
    case RopeType::Yarn: {
      auto pos_freqs = torch::pow(rope.theta, frequency_exponents(dim));
      auto extrapolation = 1.0 / pos_freqs;
      auto interpolation = 1.0 / (rope.factor * pos_freqs);
      // The dimension at which a wavelength makes `rotations` turns over the original context.
      auto correction_dim = [&](double rotations) {
        return (static_cast<double>(dim) *
                std::log(static_cast<double>(rope.original_max_position_embeddings) / (rotations * 2.0 * M_PI))) /
               (2.0 * std::log(rope.theta));
      };
      double low = correction_dim(rope.beta_fast), high = correction_dim(rope.beta_slow);
      if (rope.truncate) low = std::floor(low), high = std::ceil(high);
      low = std::max(low, 0.0);
      high = std::min(high, static_cast<double>(dim - 1));
      if (low == high) high += 0.001;  // as transformers: no zero-width ramp
      auto ramp = ((torch::arange(dim / 2, torch::kFloat32) - low) / (high - low)).clamp(0.0, 1.0);
      auto extrapolation_share = 1.0 - ramp;
      inv_freq = interpolation * (1.0 - extrapolation_share) + extrapolation * extrapolation_share;
      break;
    }
    case RopeType::LongRope: {
      const auto& factors = seq_len > rope.original_max_position_embeddings ? rope.long_factor : rope.short_factor;
      auto ext = torch::tensor(std::vector<float>(factors.begin(), factors.end()), torch::kFloat32);
      inv_freq = 1.0 / (ext * torch::pow(rope.theta, frequency_exponents(dim)));
      break;
    }
  }
  return inv_freq.to(device);
}

RopeTables rope_tables(const torch::Tensor& inv_freq, double attention_factor, const torch::Tensor& positions,
                       torch::ScalarType dtype) {
  auto angles = positions.to(torch::kFloat32).unsqueeze(-1) * inv_freq;
  auto c = angles.cos(), s = angles.sin();
  if (attention_factor != 1.0) c = c * attention_factor, s = s * attention_factor;
  return {torch::cat({c, c}, -1).to(dtype), torch::cat({-s, s}, -1).to(dtype)};
}

}  // namespace prge

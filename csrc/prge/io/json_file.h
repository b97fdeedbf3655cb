#pragma once
// A JSON file (a model's config.json) read with yaml-cpp, where yaml-cpp and Python's json (what
// transformers reads it with) would disagree: a surrogate-pair escape such as "\ud83d\ude00",
// which json.dumps writes for every character outside the BMP, is decoded first (yaml-cpp
// refuses it); a key given twice in one object is refused by name (json takes the last,
// yaml-cpp's lookup the first).
#include <yaml-cpp/yaml.h>

#include <string>

namespace prge::io {

// The file's text with each \uD8xx\uDCxx escape pair replaced by the character's UTF-8 bytes;
// every other escape, a lone surrogate included, is left as written.
std::string decode_surrogate_pairs(const std::string& json);

// The parsed file. Raises std::runtime_error naming `path`: not found, a directory, malformed,
// or a key repeated (with the object it is in).
YAML::Node load_json_file(const std::string& path);

}  // namespace prge::io

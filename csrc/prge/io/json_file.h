#pragma once
// A JSON file (a model's config.json) read with yaml-cpp, as Python's json (what transformers
// reads it with) reads it. JSON is YAML's flow syntax, but the two differ where this file makes
// them agree or refuses: YAML that is not JSON (an anchor or alias, a tag, a comment, `~`, a
// bare word, a single-quoted string, 064 or .5) is refused, as json refuses it; a surrogate-pair
// escape such as "\ud83d\ude00", which json.dumps writes for every character outside the BMP, is
// decoded first (yaml-cpp refuses it); a key given twice in one object is refused by name (json
// takes the last, yaml-cpp's lookup the first).
#include <yaml-cpp/yaml.h>

#include <string>

namespace prge::io {

// The file's text for yaml-cpp: each \uD8xx\uDCxx escape pair replaced by the character's UTF-8
// bytes, all else as written. Raises std::invalid_argument ("line L, column C: ...") where the
// text is not JSON's: outside strings only {}[],: whitespace, numbers and true / false / null
// (and NaN / Infinity, which json also reads); inside them no raw control character and no
// lone surrogate escape.
std::string json_text_for_yaml(const std::string& json);

// The parsed file. Raises std::runtime_error naming `path`: not found, a directory, not JSON,
// malformed, or a key repeated (with the object it is in).
YAML::Node load_json_file(const std::string& path);

}  // namespace prge::io

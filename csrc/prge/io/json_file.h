#pragma once
// A JSON file (a model's config.json) read with yaml-cpp, as Python's json (what transformers
// reads it with) reads it. JSON is YAML's flow syntax, but the two differ where this file makes
// them agree or refuses: YAML that is not JSON (an anchor or alias, a tag, a comment, `~`, a
// bare word, a single-quoted string, 064 or .5, a trailing comma, a key that is not a string)
// is refused, as json refuses it; a surrogate-pair escape such as "\ud83d\ude00", which
// json.dumps writes for every character outside the BMP, is decoded first (yaml-cpp refuses
// it); a key given twice in one object is refused by name (json takes the last, yaml-cpp's
// lookup the first).
#include <yaml-cpp/yaml.h>

#include <string>

namespace prge::io {

// The file's text for yaml-cpp: each \uD8xx\uDCxx escape pair replaced by the character's UTF-8
// bytes, each object key written as YAML's explicit key (`? "key"`, so that a key over 1024
// bytes or a line break before its ':' reads), all else as written. Raises
// std::invalid_argument ("line L, column C: ...") where the text is not JSON's: outside strings
// only {}[],: whitespace, numbers and true / false / null (and NaN / Infinity, which json also
// reads), in JSON's structure (RFC 8259: no trailing comma, keys are strings, one value per
// text), at most 400 nested objects and arrays; inside strings well-formed UTF-8 (as Python's
// codec reads it), no raw control character, no \u without four hex digits and no lone
// surrogate escape (Python reads one into a str that UTF-8 cannot hold). Columns count characters.
std::string json_text_for_yaml(const std::string& json);

// Raises std::runtime_error when an object in `node` (a parsed JSON text read from `path`) has a
// key twice, naming the key and where it is (`where`: the key path so far, "" at the top).
void refuse_repeated_keys(const YAML::Node& node, const std::string& path, const std::string& where = "");

// The parsed file. Raises std::runtime_error naming `path`: not found, a directory, not JSON,
// malformed, or a key repeated (with the object it is in).
YAML::Node load_json_file(const std::string& path);

// The parsed JSON `text`, read from `path`; `what` names it in messages when it is a part of the
// file ("safetensors header"), "" for a whole file. Raises std::runtime_error naming `path`: not
// JSON (line and column in `text`), malformed, or a key repeated.
YAML::Node parse_json(const std::string& text, const std::string& path, const std::string& what = "");

}  // namespace prge::io

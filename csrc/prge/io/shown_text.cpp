#include "prge/io/shown_text.h"

#include "prge/io/utf8.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <cstdint>
#include <iterator>
#include <utility>

namespace prge::io {

namespace {

constexpr Space kSpaces[] = {
    {" ", " "}, {"\t", "\\t"}, {"\n", "\\n"}, {"\r", "\\r"}, {"\v", "\\v"}, {"\f", "\\f"},
    {"\x1c", "\\x1c"}, {"\x1d", "\\x1d"}, {"\x1e", "\\x1e"}, {"\x1f", "\\x1f"}, {"\xc2\x85", "\\u0085"},
    {"\xc2\xa0", "\\u00a0"}, {"\xe1\x9a\x80", "\\u1680"}, {"\xe2\x80\x80", "\\u2000"}, {"\xe2\x80\x81", "\\u2001"},
    {"\xe2\x80\x82", "\\u2002"}, {"\xe2\x80\x83", "\\u2003"}, {"\xe2\x80\x84", "\\u2004"}, {"\xe2\x80\x85", "\\u2005"},
    {"\xe2\x80\x86", "\\u2006"}, {"\xe2\x80\x87", "\\u2007"}, {"\xe2\x80\x88", "\\u2008"}, {"\xe2\x80\x89", "\\u2009"},
    {"\xe2\x80\x8a", "\\u200a"}, {"\xe2\x80\xa8", "\\u2028"}, {"\xe2\x80\xa9", "\\u2029"}, {"\xe2\x80\xaf", "\\u202f"},
    {"\xe2\x81\x9f", "\\u205f"}, {"\xe3\x80\x80", "\\u3000"},
};

// Code points a terminal does not show as themselves that visible() escapes besides the spaces and
// C0 controls: the C1 controls and the invisible format characters that hide or reorder text (soft
// hyphen, Arabic letter mark, Mongolian vowel separator, zero-width and bidirectional marks,
// embeddings, overrides and isolates, word joiner and invisible operators, byte-order mark,
// interlinear annotation, musical formatting and tag characters). Python's whitespace.HIDDEN is
// the same list (tests/python/test_harness.py holds them equal).
struct Range {
  char32_t first, last;
};
constexpr Range kHidden[] = {
    {0x80, 0x9f}, {0xad, 0xad}, {0x61c, 0x61c}, {0x180e, 0x180e}, {0x200b, 0x200f},
    {0x202a, 0x202e}, {0x2060, 0x2064}, {0x2066, 0x206f}, {0xfeff, 0xfeff}, {0xfff9, 0xfffb}, {0x1d173, 0x1d17a},
    {0xe0001, 0xe0001}, {0xe0020, 0xe007f},
};

// The code point of the well-formed UTF-8 sequence of `length` bytes (utf8_length's) at `at`.
char32_t code_point_at(const std::string& text, size_t at, size_t length) {
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(text[at + i]); };
  char32_t code = byte(0) & (0x7F >> length);
  for (size_t i = 1; i < length; ++i) code = code << 6 | (byte(i) & 0x3F);
  return code;
}

bool hidden(char32_t code) {
  return std::any_of(std::begin(kHidden), std::end(kHidden),
                     [code](const Range& r) { return r.first <= code && code <= r.last; });
}

// A longer value is shown by its first kShownValueChars characters and its length; Python's
// whitespace.SHOWN_VALUE_CHARS is the same (tests/python/test_harness.py holds them equal).
constexpr size_t kShownValueChars = 80;

}  // namespace

const Space* space_at(const std::string& text, size_t at) {
  for (const auto& space : kSpaces) {
    if (text.compare(at, std::strlen(space.bytes), space.bytes) == 0) return &space;
  }
  return nullptr;
}

std::string visible(const std::string& text) {
  std::string out;
  for (size_t at = 0; at < text.size();) {
    const auto* space = space_at(text, at);
    if (space != nullptr && *space->bytes != ' ') {
      out += space->shown;
      at += std::strlen(space->bytes);
    } else if (const auto byte = static_cast<unsigned char>(text[at]); byte < 0x20 || byte == 0x7f) {
      out += fmt::format("\\x{:02x}", byte);  // another control character (ESC would restyle the terminal)
      ++at;
    } else if (byte < 0x80) {
      out += text[at++];
    } else if (const auto length = utf8_length(text, at); length == 0) {
      out += fmt::format("\\x{:02x}", byte);  // not UTF-8 (a lone C1 byte like 0x9b would start a CSI)
      ++at;
    } else if (const auto code = code_point_at(text, at, length); hidden(code)) {
      out += fmt::format(code > 0xffff ? "\\U{:08x}" : "\\u{:04x}", static_cast<uint32_t>(code));
      at += length;
    } else {
      out.append(text, at, length);
      at += length;
    }
  }
  return out;
}

std::string shown_value(const std::string& value) {
  size_t at = 0, chars = 0;
  while (at < value.size() && chars < kShownValueChars) {  // a byte that is not UTF-8 counts as one (visible's \xNN)
    const auto length = static_cast<unsigned char>(value[at]) < 0x80 ? 1 : utf8_length(value, at);
    at += std::max<size_t>(length, 1);
    ++chars;
  }
  if (at >= value.size()) return "'" + visible(value) + "'";
  return fmt::format("'{}...' ({} bytes)", visible(value.substr(0, at)), value.size());
}

bool ends_with_space(const std::string& text) {
  return std::any_of(std::begin(kSpaces), std::end(kSpaces), [&](const Space& space) {
    const auto n = std::strlen(space.bytes);
    return text.size() >= n && text.compare(text.size() - n, n, space.bytes) == 0;
  });
}

}  // namespace prge::io

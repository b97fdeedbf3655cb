#pragma once
// How a message shows a value it quotes: whitespace and control characters escaped, a long value
// cut to its start and its length, so that a value cannot restyle the terminal or fill it.
#include <cstddef>
#include <string>

namespace prge::io {

// A whitespace character as UTF-8 (ASCII's, and Unicode's space separators and no-break spaces:
// what Python's str.isspace() takes), with the escape a message shows for it.
struct Space {
  const char* bytes;
  const char* shown;
};

// The whitespace character at `at` in text (nullptr if none there).
const Space* space_at(const std::string& text, size_t at);

// Whether text ends with a whitespace character (space_at's).
bool ends_with_space(const std::string& text);

// Text with its whitespace other than a plain space, its control characters (C0, DEL, C1) and the
// invisible characters that hide or reorder text (zero-width, bidirectional) escaped (\t,
// \u00a0, \x1b, \u202e), and each byte that is not part of well-formed UTF-8 as \xNN, for messages.
std::string visible(const std::string& text);

// A value (a --set value, a scalar of the wrong type, a name outside a closed set) as a message
// shows it, quoted: visible(), and only its first 80 characters (a UTF-8 character is not split;
// a byte that is not UTF-8 counts as one) with its whole length in bytes where it is longer, so
// that a long value (a file's text pasted by mistake) does not fill the terminal.
std::string shown_value(const std::string& value);

}  // namespace prge::io

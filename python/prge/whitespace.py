"""Control characters and whitespace beyond ASCII's: what prge's messages show escaped and what a
sweep's run names replace, and how a message quotes a value (shown_value) or writes a name
(shown_name, shown_names). One source for sweep.py, overrides.py and the data readers; the C++
config reader has its own (csrc/prge/io/shown_text.cpp), which tests/python compare with
str.isspace()."""
from __future__ import annotations

import re

# What str.isspace() takes beyond ASCII: U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029,
# U+202F, U+205F and U+3000; Unicode has none above U+3000 (a test checks every code point).
UNICODE_SPACES = "".join(ch for ch in map(chr, range(0x80, 0x3100)) if ch.isspace())
# C0 controls and DEL; ASCII's whitespace other than a plain space (\t \n \v \f \r \x1c-\x1f) is
# among them.
CONTROLS = "".join(map(chr, range(0x20))) + "\x7f"

UNICODE_SPACE = re.compile(f"[{UNICODE_SPACES}]")
# A directory name cannot hold them, a shell listing shows them badly, or a path may not end with
# them; a run of them in a grid value names its run as one _.
CONTROL_OR_SPACE = re.compile("[%s]+" % re.escape(CONTROLS + UNICODE_SPACES))
ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\v": "\\v", "\f": "\\f"}
# Characters a terminal does not show as themselves that a message escapes besides those: the C1
# controls (U+0080-U+009F) and the invisible format characters that hide or reorder text (soft
# hyphen, Arabic letter mark, Mongolian vowel separator, zero-width and bidirectional marks,
# embeddings, overrides and isolates, word joiner and invisible operators, byte-order mark,
# interlinear annotation, musical formatting and tag characters), so a name cannot look like
# another (Unicode TR36 / "Trojan Source"). csrc/prge/io/shown_text.cpp has the same list;
# test_harness.py holds the two equal. Run names (CONTROL_OR_SPACE) keep them.
HIDDEN = ("".join(map(chr, range(0x80, 0xa0))) + "\u00ad\u061c\u180e" + "".join(map(chr, range(0x200b, 0x2010)))
          + "".join(map(chr, range(0x202a, 0x202f))) + "".join(map(chr, range(0x2060, 0x2065)))
          + "".join(map(chr, range(0x2066, 0x2070))) + "\ufeff\ufff9\ufffa\ufffb"
          + "".join(map(chr, range(0x1d173, 0x1d17b))) + "\U000e0001" + "".join(map(chr, range(0xe0020, 0xe0080))))
SHOWN_ESCAPED = re.compile("[%s]+" % re.escape(CONTROLS + UNICODE_SPACES + HIDDEN))
_INVISIBLE = frozenset(HIDDEN)


def invisible(text: str) -> bool:
    """Whether a text shows nothing: only whitespace and the HIDDEN format characters (a
    zero-width space alone, a byte-order mark), or empty."""
    return all(c.isspace() or c in _INVISIBLE for c in text)


def emptiness(text: str) -> str | None:
    """What a message says of a text that holds nothing to read ("is empty", or "= '\\u200b'
    holds only invisible characters: no text"), None for one that does."""
    if not text.strip():
        return "is empty"
    return f"= {shown_value(text)} holds only invisible characters: no text" if invisible(text) else None


def escape_unicode_spaces(text: str) -> str:
    """text with each whitespace character beyond ASCII's as a \\uXXXX escape (for JSON / YAML
    double-quoted strings)."""
    return UNICODE_SPACE.sub(lambda m: f"\\u{ord(m[0]):04x}", text)


def visible(text: str) -> str:
    """text for a message: control characters, whitespace other than a space and the HIDDEN
    characters escaped (\\t, \\x01, \\u00a0, \\u202e), as the config reader shows a path's."""
    return SHOWN_ESCAPED.sub(lambda m: "".join(
        ESCAPES.get(ch, f"\\U{ord(ch):08x}" if ord(ch) > 0xffff else f"\\u{ord(ch):04x}" if ord(ch) > 0x7f
                    else f"\\x{ord(ch):02x}") for ch in m[0]), text)


# A value longer than this is shown by its start and its length, as the C++ reader's shown_value
# (kShownValueChars); test_harness.py holds the two equal.
SHOWN_VALUE_CHARS = 80


def shown_value(value) -> str:
    """value quoted for a message, as repr() writes it (control characters escaped); a text longer
    than SHOWN_VALUE_CHARS characters as the C++ reader shows one, by its first ones and its length
    in UTF-8 bytes ('abc...' (600 bytes)), and another value whose repr is that long by the start
    of its repr and the repr's length, so that a file's text pasted as a value does not fill the
    terminal. A text of at most SHOWN_VALUE_CHARS characters is shown whole."""
    if isinstance(value, str):
        start, length = _cut(value)
        if not length:
            return repr(value)
        quoted = repr(start)
        return f"{quoted[:-1]}...{quoted[-1]}{length}"
    return shortened(repr(value))


def _cut(text: str) -> tuple[str, str]:
    """(text, "") for a text of at most SHOWN_VALUE_CHARS characters, else (its first ones,
    " (N bytes)" with its whole length in UTF-8 bytes): the one cut of shown_value and shown_name,
    as the C++ reader's shown_value cuts."""
    if len(text) <= SHOWN_VALUE_CHARS:
        return text, ""
    return text[:SHOWN_VALUE_CHARS], f" ({len(text.encode('utf-8', 'surrogatepass'))} bytes)"


def shortened(text: str) -> str:
    """A value's written form (its repr, its JSON) for a message: whole up to SHOWN_VALUE_CHARS
    characters, else its start and its length ('[1, 2, 3... (390 characters)')."""
    return text if len(text) <= SHOWN_VALUE_CHARS else f"{text[:SHOWN_VALUE_CHARS]}... ({len(text)} characters)"


# A message lists at most this many names (a record's fields, a file's keys) before "and N more".
SHOWN_NAMES = 20


def shown_names(names) -> str:
    """names for a message, each as shown_value quotes it (so a name holding ", " stays one),
    comma-separated; past SHOWN_NAMES of them, the rest counted ("'a', 'b', ... and 7 more"), so
    that a record of a thousand fields does not fill the terminal."""
    names = list(names)
    shown = ", ".join(map(shown_value, names[:SHOWN_NAMES]))
    return shown if len(names) <= SHOWN_NAMES else f"{shown}, ... and {len(names) - SHOWN_NAMES} more"


def shown_name(name, quoted: bool = False) -> str:
    """A name written in a message (a field or column name, a grid key, a variant's name): control
    characters, whitespace other than a space and HIDDEN characters escaped (visible), in single
    quotes where `quoted`, and one longer than SHOWN_VALUE_CHARS characters cut as shown_value cuts
    a text (name... (600 bytes); quoted: 'name...' (600 bytes))."""
    quote = "'" if quoted else ""
    start, length = _cut(str(name))
    return f"{quote}{visible(start)}{'...' if length else ''}{quote}{length}"

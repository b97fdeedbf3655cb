"""JSON lines, read with errors that name the file and the line."""
from __future__ import annotations

import json
from pathlib import Path

from prge.whitespace import shown_value


NUL_ADVICE = "not text; remove it or fix the export that wrote it"  # every reader's NUL message ends so
LONE_SURROGATE = "a lone UTF-16 surrogate, which encodes no character"  # an unpaired JSON \uD800-\uDFFF escape


def is_unicode_text(text: str) -> bool:
    """Whether a str encodes as UTF-8, that is, holds no lone UTF-16 surrogate (JSON's \\u escapes
    can spell one, and Python reads it into a str no tokenizer or UTF-8 file can hold)."""
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def is_json_int(value) -> bool:
    """Whether a parsed JSON value is an integer (Python's bool is an int; JSON's true is not)."""
    return isinstance(value, int) and not isinstance(value, bool)


class DuplicateKey(ValueError):
    """A JSON object that gives one key twice: JSON leaves which value counts to the reader
    (Python's json keeps the last), so it is refused instead of guessed."""


def unique_keys(pairs: list) -> dict:
    """json.loads' object_pairs_hook: the object, or DuplicateKey naming the key given twice."""
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise DuplicateKey(f"the key {shown_value(key)} is given twice in one object")
        seen[key] = value
    return seen


class _Written:
    """A JSON number that prints as the file wrote it (float or int beside it in the bases)."""

    def __new__(cls, text: str):
        number = super().__new__(cls, text)
        number.text = text
        return number

    def __str__(self) -> str:
        return self.text

    __repr__ = __str__

    def __reduce__(self):
        return type(self), (self.text,)


class WrittenFloat(_Written, float):
    """A JSON number with a fraction or exponent, as a float that prints as the file wrote it:
    str(1.50) is '1.50', not Python's '1.5', so a price, version or score placed into a prompt
    is the text the user's file holds. Arithmetic and json.dumps see the plain float."""


class WrittenInt(_Written, int):
    """A JSON integer that prints as the file wrote it (-0 stays -0); see WrittenFloat. An
    integer of more digits than Python converts (sys.get_int_max_str_digits) is a ValueError."""


def as_written_json(text: str, **hooks):
    """json.loads with numbers as WrittenFloat / WrittenInt (data files, whose values become
    prompt text); ValueError for an integer too long to convert, besides json's own errors."""
    return json.loads(text, parse_float=WrittenFloat, parse_int=WrittenInt, **hooks)


def read_jsonl(path: str | Path) -> list:
    return [record for _, record in read_jsonl_numbered(path)]


def read_jsonl_numbered(path: str | Path, written: bool = False) -> list[tuple[int, object]]:
    """(line number, value) of each non-blank line; ValueError naming the file and line of a
    line that is not UTF-8 or not JSON, or whose objects give a key twice. `written`: numbers as
    the file wrote them (as_written_json: data files, whose values become prompt text)."""
    records = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")  # a byte-order mark is dropped
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{number}: not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1}); "
                                 "save the file as UTF-8") from e
            if not line.strip():
                continue
            if "\x00" in line:
                raise ValueError(f"{path}:{number}: a NUL character (\\x00) at column {line.index(chr(0)) + 1}: "
                                 f"{NUL_ADVICE}")
            try:
                value = (as_written_json if written else json.loads)(line, object_pairs_hook=unique_keys)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{number}: malformed JSON ({e.msg})") from e
            except ValueError as e:  # a key given twice, or an integer too long for Python
                raise ValueError(f"{path}:{number}: {e}") from None
            if "\\u" in line and not _is_text(value):
                raise ValueError(f"{path}:{number}: a \\uD800-\\uDFFF escape that is not half of a surrogate pair "
                                 f"(a lone UTF-16 surrogate) encodes no character: {NUL_ADVICE}")
            records.append((number, value))
    return records


def _is_text(value) -> bool:
    """Whether every string in a parsed JSON value is Unicode text: JSON's \\u escapes can
    spell a lone UTF-16 surrogate, which no tokenizer or UTF-8 file can hold."""
    return is_unicode_text(json.dumps(value, ensure_ascii=False))

"""Dotted-key overrides of a config (`--set estimator.queries=4`, a sweep's grid values), handed
to the C++ reader as (KEY, VALUE text) pairs: it applies each to the parsed YAML mapping, reads
VALUE as a YAML 1.2 node and names the --set in its errors (csrc/prge/config.cpp). Nothing
here re-serialises a config.

Sweep files are read with SweepLoader: PyYAML with YAML 1.2's booleans (true / false: `yes`,
`on`, `no`, `off` stay strings), integers (017 is seventeen; 1_000 and 1:30 are strings) and
floats (1e-3 is a number), as the C++ reader reads a config, and refusing duplicate keys, so a
value means the same in a sweep as in a config."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import yaml

from prge.whitespace import UNICODE_SPACE, escape_unicode_spaces, shown_value, visible


def read_text(path: str | Path, what: str = "file") -> str:
    """A UTF-8 text file (a leading BOM dropped); errors name the file, and for bad bytes the
    line and column."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {visible(str(path))}")
    if not path.is_file():
        raise ValueError(f"{visible(str(path))}: not a file (a directory?); expected a {what}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ValueError(f"{path}:{line}:{column}: not UTF-8 text (byte {data[e.start]:#04x}); save the "
                         f"{what} as UTF-8") from e
    return text[1:] if text.startswith("\ufeff") else text


ASCII_SPACE = " \t\r\n\f\v"


def parse_assignment(text: str) -> tuple[str, str]:
    """'section.key=value' -> (key, value text); the value is read by the config reader."""
    if "=" not in text:
        raise ValueError(f"--set {shown_value(text)} must look like section.key=value")
    key, raw = (part.strip(ASCII_SPACE) for part in text.split("=", 1))  # not a no-break space: the reader names it
    if not key or not raw:
        raise ValueError(f"--set {shown_value(text)}: an empty {'key' if not key else 'value'} "
                         "(a key left empty would silently fall back to its default)")
    return key, raw


def key_parts(key: str) -> list[str]:
    """The keys of a dotted path, split by the config reader itself (key_path in
    csrc/prge/config.cpp): 'data.label_words."1.5"' -> ['data', 'label_words', '1.5']; ValueError
    for a path it refuses (an empty key, an open quote)."""
    from prge._core import config_key_path

    if not (parts := config_key_path(key)):
        raise ValueError(f"{shown_value(key)} is not a key (expected section.key; a key that holds a dot in double quotes: "
                         'data.label_words."1.5")')
    return parts


class SweepLoader(yaml.SafeLoader):
    """yaml.SafeLoader with YAML 1.2 booleans and duplicate keys refused (see the module text)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:  # a list or mapping as a key ("? [a]"): no sweep key is one
                raise yaml.constructor.ConstructorError("while constructing a mapping", node.start_mark,
                                                        "found unhashable key", key_node.start_mark) from None
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {shown_value(key)} (first at line {seen[key].line + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep)


_YAML_1_1_ONLY = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}
SweepLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _YAML_1_1_ONLY]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _tag, _pattern, _firsts in (  # YAML 1.2's core schema; an int before a float, which also matches it
        ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
        ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
        ("tag:yaml.org,2002:float", r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                                    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", "-+.0123456789")):
    for _first in _firsts:
        SweepLoader.yaml_implicit_resolvers.setdefault(_first, []).append((_tag, re.compile(_pattern)))


def _construct_int(loader, node):
    """A YAML 1.2 integer: decimal (a leading 0 is not octal), 0o octal or 0x hexadecimal."""
    text = loader.construct_scalar(node)
    return int(text, 0) if text[:2] in ("0o", "0x") else int(text, 10)


SweepLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def load_yaml(text: str, source: str):
    """A sweep file's YAML (SweepLoader); ValueError naming the file and line."""
    return compose_yaml(text, source)[0]


def compose_yaml(text: str, source: str):
    """(data, node) of one parse of a sweep file's YAML (SweepLoader): the node tree keeps each
    value's line and column for messages; ValueError naming the file and line."""
    try:
        return _load_checked(SweepLoader, text, source)
    except yaml.MarkedYAMLError as e:  # one line: the place, then what PyYAML found
        mark = e.problem_mark or e.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ValueError(f"{where}: malformed YAML: {e.problem or e.context}") from e
    except yaml.YAMLError as e:
        raise ValueError(f"{source}: malformed YAML: {e}") from e


def safe_load_checked(text: str, source: str):
    """yaml.safe_load (YAML 1.1, as PyYAML reads a run's config.yaml) after the size check the
    config reader makes (_check_size): ValueError naming `source` and the place for a node that
    holds itself or aliases of aliases; yaml.YAMLError for malformed YAML, as safe_load raises."""
    return _load_checked(yaml.SafeLoader, text, source)[0]


def _load_checked(loader_class, text: str, source: str):
    """(data, node) of one document read by `loader_class`, its node tree checked by _check_size
    before anything is constructed; (None, None) for an empty one. ValueError naming `source`
    where the nesting runs past Python's stack first (PyYAML composes nodes recursively)."""
    from prge._core import YAML_MAX_DEPTH

    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_size(node, source)
        return loader.construct_document(node), node
    except RecursionError:
        raise ValueError(f"{source}: the YAML is nested more than {YAML_MAX_DEPTH} levels deep (far more: the "
                         "YAML reader ran out of stack)") from None
    finally:
        loader.dispose()


def _check_size(root: yaml.Node, source: str) -> None:
    """ValueError naming the place where a YAML node tree nests deeper than the config reader's
    limit or holds more values (aliases counted each time they are used): an alias inside the node
    it names makes a node that holds itself, aliases of aliases a tree that doubles each level,
    which walking the values never ends (prge._core.YAML_MAX_DEPTH / YAML_MAX_VALUES)."""
    from prge._core import YAML_MAX_DEPTH, YAML_MAX_VALUES

    sizes: dict[int, int] = {}  # a node's values, counted once however many aliases use it
    inside: set[int] = set()  # the nodes being walked: one met again holds itself

    def size(node: yaml.Node, depth: int) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        total = YAML_MAX_VALUES + 1 if depth > YAML_MAX_DEPTH or id(node) in inside else 1
        if total == 1 and isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            inside.add(id(node))
            children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else node.value
            for child in children:
                total += size(child, depth + 1)
                if total > YAML_MAX_VALUES:
                    break
            inside.discard(id(node))
        if total > YAML_MAX_VALUES:
            mark = node.start_mark
            raise ValueError(f"{source}:{mark.line + 1}:{mark.column + 1}: the YAML is nested more than "
                             f"{YAML_MAX_DEPTH} levels deep or holds more than {YAML_MAX_VALUES} values (an alias "
                             "inside the node it names, or aliases of aliases?)")
        sizes[id(node)] = total
        return total

    size(root, 0)


def _has_unicode_space(value) -> bool:
    """Whether a str in value (a key or a value, nested in mappings and lists) holds whitespace
    beyond ASCII's."""
    if isinstance(value, str):
        return UNICODE_SPACE.search(value) is not None
    if isinstance(value, dict):
        return any(_has_unicode_space(k) or _has_unicode_space(v) for k, v in value.items())
    return isinstance(value, list) and any(map(_has_unicode_space, value))


def _flow_text(value) -> str:
    """value as YAML flow text whose strings are all JSON's double-quoted strings (which YAML
    reads) with whitespace beyond ASCII as \\u escapes; other scalars (numbers, .nan, null,
    dates) as value_text writes them."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_flow_text(k)}: {_flow_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(map(_flow_text, value)) + "]"
    if isinstance(value, str):
        return escape_unicode_spaces(json.dumps(value, ensure_ascii=False))
    return value_text(value)


def value_text(value) -> str:
    """A value read by SweepLoader as YAML 1.2 text that the config reader reads back to the same
    value (strings that look like other types quoted)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if value != value else (".inf" if value > 0 else "-.inf")
    if _has_unicode_space(value):
        # A no-break space or U+2028 anywhere in it: written as JSON (which YAML reads) with those
        # as \u escapes, which keeps them as they are (PyYAML's text folds U+0085 / U+2028 into
        # spaces and leaves one at a plain value's end, where the reader drops it), so the
        # reader sees, and refuses in a path, what the sweep file holds.
        return _flow_text(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=float("inf"), allow_unicode=True,
                          sort_keys=False).rstrip("\n")  # a mapping keeps its order (label_words: the classes)
    return text[: -len("...")].rstrip("\n") if text.endswith("\n...") else text

"""Dotted-key overrides on a YAML config (`estimator.queries=4`), applied before the
C++ parser validates the result."""
from __future__ import annotations

import copy
import re

import yaml

# The source name given to the config text that --set rewrote: its line numbers are not the
# user's, so relocate() maps every message about it back to the user's file or to the --set.
REWRITTEN = "<config with --set applied>"


def parse_assignment(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise ValueError(f"--set {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    if not key.strip() or not raw.strip():
        raise ValueError(f"--set {text!r}: an empty {'key' if not key.strip() else 'value'} "
                         "(a key left empty would silently fall back to its default)")
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ValueError(f"--set {text!r}: the value is not valid YAML ({e})") from e


def apply_overrides(tree: dict | None, overrides: dict[str, object], source: str = "the config") -> dict:
    if tree is not None and not isinstance(tree, dict):
        raise ValueError(f"{source}: expected a mapping of sections (model:, estimator:, ...), "
                         f"got a YAML {type(tree).__name__}")
    tree = copy.deepcopy(tree) if tree else {}
    for dotted, value in overrides.items():
        node = tree
        parts = dotted.split(".")
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise ValueError(f"override '{dotted}': '{part}' is not a section")
        node[parts[-1]] = value
    return tree


def _key_mark(text: str, dotted: str):
    """(line, column), 1-based, of a dotted key in a YAML text, or None."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    mark = None
    for part in dotted.split("."):
        if not isinstance(node, yaml.MappingNode):
            return None
        for key, value in node.value:
            if key.value == part:
                mark, node = key.start_mark, value
                break
        else:
            return None
    return (mark.line + 1, mark.column + 1) if mark else None


def relocate(message: str, original_text: str, path: str, override_keys) -> str:
    """A config error or warning about the rewritten text, located in the user's file, or
    attributed to the --set that wrote the key."""
    found = re.match(rf"^{re.escape(REWRITTEN)}(?::\d+:\d+)?: (?P<key>[\w.]*): (?P<what>.*)$", message, re.S)
    if not found:
        return message.replace(REWRITTEN, path)
    key, what = found["key"], found["what"]
    for dotted in override_keys:
        if key == dotted or key.startswith(dotted + ".") or dotted.startswith(key + "."):
            return f"{path}: --set {dotted}: {key}: {what}"
    mark = _key_mark(original_text, key)
    return f"{path}:{mark[0]}:{mark[1]}: {key}: {what}" if mark else f"{path}: {key}: {what}"

"""Dotted-key overrides on a YAML config (`estimator.queries=4`), applied before the
C++ parser validates the result."""
from __future__ import annotations

import copy

import yaml


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

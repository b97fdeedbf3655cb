"""Dotted-key overrides on a YAML config (`estimator.queries=4`), applied before the
C++ parser validates the result."""
from __future__ import annotations

import copy

import yaml


def parse_assignment(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise ValueError(f"override '{text}' must look like section.key=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw)


def apply_overrides(tree: dict | None, overrides: dict[str, object]) -> dict:
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

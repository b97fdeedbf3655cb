"""JSON lines, read with errors that name the file and the line."""
from __future__ import annotations

import json
from pathlib import Path


def read_jsonl(path: str | Path) -> list:
    records = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{number}: malformed JSON ({e.msg})") from e
    return records

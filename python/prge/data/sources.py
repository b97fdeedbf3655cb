"""Raw records of one split from the formats the task loaders accept: the published
files (TSV / CSV with a header line, JSON lines, a JSON array), a Hugging Face `datasets`
directory written by save_to_disk, or hf:NAME[/CONFIG] loaded from the hub (needs internet)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from prge.jsonl import read_jsonl

HF_SPLITS = {"train": "train", "eval": "validation"}


class MissingSplit(FileNotFoundError):
    """The data holds no such split (e.g. BoolQ's published files: validation only)."""


def read_tsv(path: Path) -> list[dict]:
    # GLUE's TSVs are not quoted (MRPC has unbalanced '"') and may start with a byte-order mark.
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def read_json_array(path: Path) -> list[dict]:
    """A file holding one JSON array of objects (Hugging Face `to_list()` dumps, e.g. ARC-Easy).
    ValueError naming the file for anything else."""
    try:
        records = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from e
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ValueError(f"{path}: expected one JSON array of objects")
    return records


READERS = {".tsv": read_tsv, ".csv": read_csv, ".jsonl": read_jsonl, ".json": read_json_array}


def is_hf_spec(data_dir: str | Path | None) -> bool:
    return isinstance(data_dir, str) and data_dir.startswith("hf:")


def is_hf_disk_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file()


def _datasets():
    try:
        import datasets
    except ImportError as e:
        raise ImportError("reading the Hugging Face datasets format needs `pip install datasets`") from e
    return datasets


def read_hf(location: str | Path, split: str) -> list[dict]:
    """Rows of split ('train' or 'eval' -> HF 'validation') as plain dicts. MissingSplit when a
    save_to_disk directory has no such split."""
    datasets = _datasets()
    if is_hf_spec(location):
        name, _, config = str(location)[3:].partition("/")
        dataset = datasets.load_dataset(name, config or None, split=HF_SPLITS[split])
    else:
        dataset_dict = datasets.load_from_disk(str(location))
        if HF_SPLITS[split] not in dataset_dict:
            raise MissingSplit(f"{location}: no '{HF_SPLITS[split]}' split (has {list(dataset_dict)})")
        dataset = dataset_dict[HF_SPLITS[split]]
    return [dict(row) for row in dataset]


def read_split(root: str | Path, split: str, files: dict[str, str], task: str) -> list[dict]:
    """Records of a split from root, whatever its format. MissingSplit when the split's file (or
    the save_to_disk split) is not there."""
    if is_hf_spec(root):
        return read_hf(root, split)
    root = Path(root)
    if is_hf_disk_dataset(root):
        return read_hf(root, split)
    if split not in files:
        raise MissingSplit(f"{task}: no published {split} split is known (files: {files})")
    path = root / files[split]
    if not path.is_file():
        raise MissingSplit(f"{task}: {path} not found (expected {files[split]}, "
                           "or a datasets.save_to_disk directory)")
    try:
        records = READERS[path.suffix](path)
    except UnicodeDecodeError as e:
        raise ValueError(f"{task}: {path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
                         "save the file as UTF-8") from e
    if not records:
        raise ValueError(f"{task}: {path} holds no records")
    return records

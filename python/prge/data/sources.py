"""Raw records of one split from the formats the task loaders accept: the published
files (TSV / JSON lines / CSV), a Hugging Face `datasets` directory written by
save_to_disk, or hf:NAME[/CONFIG] loaded from the hub (needs internet)."""
from __future__ import annotations

import csv
from pathlib import Path

from prge.jsonl import read_jsonl

HF_SPLITS = {"train": "train", "eval": "validation"}


def read_tsv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


READERS = {".tsv": read_tsv, ".csv": read_csv, ".jsonl": read_jsonl}


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
    """Rows of split ('train' or 'eval' -> HF 'validation') as plain dicts."""
    datasets = _datasets()
    if is_hf_spec(location):
        name, _, config = str(location)[3:].partition("/")
        dataset = datasets.load_dataset(name, config or None, split=HF_SPLITS[split])
    else:
        dataset_dict = datasets.load_from_disk(str(location))
        if HF_SPLITS[split] not in dataset_dict:
            raise KeyError(f"{location}: no '{HF_SPLITS[split]}' split (has {list(dataset_dict)})")
        dataset = dataset_dict[HF_SPLITS[split]]
    return [dict(row) for row in dataset]


def read_split(root: str | Path, split: str, files: dict[str, str], task: str) -> list[dict]:
    """Records of a split from root, whatever its format."""
    if is_hf_spec(root):
        return read_hf(root, split)
    root = Path(root)
    if is_hf_disk_dataset(root):
        return read_hf(root, split)
    path = root / files[split]
    if not path.is_file():
        raise FileNotFoundError(f"{task}: {path} not found (expected {files[split]}, "
                                "or a datasets.save_to_disk directory)")
    return READERS[path.suffix](path)

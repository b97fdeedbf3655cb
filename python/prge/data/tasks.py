"""Task registry in the MeZO prompt format: a template renders the prompt, each class
has a label word, the training loss counts only the answer tokens of the gold label and
evaluation picks the label word with the highest log-likelihood."""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

SHARED_DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
MODELDATA_DIR = Path("/usr/lib/R/site-library/modeldata/data")


@dataclass(frozen=True)
class Example:
    fields: dict
    label: int


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    label_words: tuple[str, ...]
    template: Callable[[dict], str]
    loader: Callable[[str, Path | None], list[Example]]  # split in {"train", "eval"}

    def load(self, split: str, data_dir: str | Path | None = None) -> list[Example]:
        if split not in ("train", "eval"):
            raise ValueError(f"split must be 'train' or 'eval', got '{split}'")
        return self.loader(split, Path(data_dir) if data_dir else None)

    def prompt(self, example: Example) -> str:
        return self.template(example.fields)


def _default_shared(task_dir: str) -> Path:
    env = os.environ.get("PRGE_DATA")
    candidates = [Path(env) / task_dir] if env else []
    candidates += [SHARED_DATA.resolve() / task_dir, Path.cwd().parent / "shared" / "data" / task_dir]
    for c in candidates:
        if c.is_dir():
            return c
    raise FileNotFoundError(
        f"data for '{task_dir}' not found (looked in {', '.join(map(str, candidates))}); "
        "set data.data_dir or PRGE_DATA")


def _load_fine_food(split: str, data_dir: Path | None) -> list[Example]:
    """Amazon Fine Food reviews (small_fine_foods, R package modeldata, MIT):
    4000 train / 1000 test, score 'great' (5 stars) vs 'other'."""
    if data_dir is not None:  # CSVs exported with Rscript (train.csv / test.csv)
        path = data_dir / ("train.csv" if split == "train" else "test.csv")
        if not path.is_file():
            raise FileNotFoundError(f"fine_food: {path} not found")
        with open(path, newline="") as f:
            rows = [(r["review"], r["score"]) for r in csv.DictReader(f)]
    else:
        if not MODELDATA_DIR.is_dir():
            raise FileNotFoundError(
                f"fine_food: {MODELDATA_DIR} not found; install Debian's r-cran-modeldata "
                "(apt-get install r-cran-modeldata) or set data.data_dir")
        from prge.data.r_lazyload import read_lazyload_object

        frame = read_lazyload_object(MODELDATA_DIR, "training_data" if split == "train" else "testing_data")
        rows = list(zip(frame["review"].tolist(), frame["score"].tolist()))
    return [Example({"text": " ".join(str(text).split())}, 0 if score == "great" else 1)
            for text, score in rows]


def _load_sst2(split: str, data_dir: Path | None) -> list[Example]:
    root = data_dir or _default_shared("sst2")
    path = root / ("train.tsv" if split == "train" else "validation.tsv")
    if not path.is_file():
        raise FileNotFoundError(f"sst2: {path} not found")
    with open(path, newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [Example({"text": r["sentence"].strip()}, int(r["label"])) for r in reader]


def _load_rte(split: str, data_dir: Path | None) -> list[Example]:
    root = data_dir or _default_shared("rte")
    path = root / ("train.jsonl" if split == "train" else "validation.jsonl")
    if not path.is_file():
        raise FileNotFoundError(f"rte: {path} not found")
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [Example({"premise": r["premise"], "hypothesis": r["hypothesis"]},
                    0 if r["label"] == "entailment" else 1) for r in rows]


TASKS: dict[str, Task] = {
    "fine_food": Task(
        "fine_food", "Amazon Fine Food reviews: five stars ('great') or not",
        (" Yes", " No"),
        lambda f: f"Review: {f['text']}\nIs this a five-star review? Answer:",
        _load_fine_food),
    "sst2": Task(
        "sst2", "GLUE SST-2 sentiment (MeZO template)",
        (" terrible", " great"),
        lambda f: f"{f['text']} It was",
        _load_sst2),
    "rte": Task(
        "rte", "SuperGLUE RTE entailment (MeZO template)",
        (" Yes", " No"),
        lambda f: f"{f['premise']}\nDoes this mean that \"{f['hypothesis']}\" is true? Yes or No?\n",
        _load_rte),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task '{name}' (known: {', '.join(sorted(TASKS))})")
    return TASKS[name]

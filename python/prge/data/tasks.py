"""Task registry in the MeZO prompt format: a template renders the prompt, each class
has a label word, the training loss counts only the answer tokens of the gold label and
evaluation picks the label word with the highest log-likelihood."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from prge.data.locations import find_task_dir
from prge.data.sources import read_split

MODELDATA_DIR = Path("/usr/lib/R/site-library/modeldata/data")


@dataclass(frozen=True)
class Example:
    fields: dict
    label: int                   # index into the task's label words; -1 for generation tasks
    response: str | None = None  # generation / SFT tasks: the answer the loss is taken on
    # Where the record came from, for error messages: "data.train_file: PATH: record 3",
    # "sst2: train split in DIR: record 3" (1-based records); empty for hand-made examples.
    where: str = field(default="", compare=False)


@dataclass(frozen=True)
class Task:
    """A task: how to render a prompt, the label words, and how to turn a raw record
    (published files or the Hugging Face format) into an Example."""
    name: str
    description: str
    label_words: tuple[str, ...]
    template: Callable[[dict], str]
    parse: Callable[[dict], Example]
    files: dict = field(default_factory=dict)  # split -> file name in the published format
    builtin: Callable[[str], list[Example]] | None = None  # default source when no directory is given
    reader: Callable[[str], list[Example]] | None = None  # custom tasks: reads their own files
    response_field: str | None = None  # set for generation / SFT tasks (no label words)
    chat_template: bool = False

    @property
    def generation(self) -> bool:
        return self.response_field is not None

    def load(self, split: str, data_dir: str | Path | None = None) -> list[Example]:
        """The split's examples, each checked (see `check`). Raises ValueError naming the file
        (or task and split), the 1-based record and the field of a data mistake."""
        if split not in ("train", "eval"):
            raise ValueError(f"split must be 'train' or 'eval', got '{split}'")
        if self.reader is not None:
            examples = self.reader(split)
        elif not data_dir and self.builtin is not None:
            examples = [e if e.where else replace(e, where=f"{self.name}: {split} split (built in): record {i}")
                        for i, e in enumerate(self.builtin(split), 1)]
        else:
            examples = self._load_files(split, data_dir)
        for example in examples:
            self.check(example)
        return examples

    def check(self, example: Example) -> None:
        """A data mistake in one example is a ValueError naming its record and field: an empty
        (or whitespace-only) template field or response, a prompt that renders to nothing."""
        where = example.where or f"{self.name}: an example"
        for name, value in example.fields.items():
            if not str(value).strip():
                raise ValueError(f"{where}: field {name!r} is empty")
        if not self.prompt(example).strip():
            raise ValueError(f"{where}: the template renders to nothing (only whitespace)")
        if self.generation and (example.response is None or not example.response.strip()):
            raise ValueError(f"{where}: field {self.response_field!r} (data.response_field) is empty")

    def _load_files(self, split: str, data_dir) -> list[Example]:
        root = data_dir or find_task_dir(self.name)
        records = read_split(root, split, self.files, self.name)
        try:
            examples = [self.parse(r) for r in records]
        except (KeyError, ValueError) as e:
            raise ValueError(f"{self.name}: a record of the {split} split in {root} does not have "
                             f"the expected fields: {e!r}") from e
        for i, e in enumerate(examples, 1):
            if not 0 <= e.label < len(self.label_words):
                raise ValueError(f"{self.name}: record {i} of the {split} split in {root} has label {e.label}, "
                                 f"outside 0..{len(self.label_words) - 1} ({', '.join(self.label_words)})")
        return [replace(e, where=f"{self.name}: {split} split in {root}: record {i}") for i, e in enumerate(examples, 1)]

    def prompt(self, example: Example) -> str:
        return self.template(example.fields)


def _fine_food_record(r: dict) -> Example:
    return Example({"text": " ".join(str(r["review"]).split())}, 0 if r["score"] == "great" else 1)


def _fine_food_builtin(split: str) -> list[Example]:
    """Amazon Fine Food reviews (small_fine_foods, R package modeldata, MIT):
    4000 train / 1000 test, score 'great' (5 stars) vs 'other'."""
    if not MODELDATA_DIR.is_dir():
        raise FileNotFoundError(
            f"fine_food: {MODELDATA_DIR} not found; install Debian's r-cran-modeldata "
            "(apt-get install r-cran-modeldata) or set data.data_dir")
    from prge.data.r_lazyload import read_lazyload_object

    name = "training_data" if split == "train" else "testing_data"
    frame = read_lazyload_object(MODELDATA_DIR, name)
    return [replace(_fine_food_record({"review": t, "score": s}),
                    where=f"fine_food: {split} split ({MODELDATA_DIR}, {name}): record {i}")
            for i, (t, s) in enumerate(zip(frame["review"].tolist(), frame["score"].tolist()), 1)]


def _sst2_record(r: dict) -> Example:
    return Example({"text": str(r["sentence"]).strip()}, int(r["label"]))


def _rte_record(r: dict) -> Example:
    label = r["label"]  # published: "entailment" / "not_entailment"; HF: 0 / 1
    entailed = label == "entailment" if isinstance(label, str) else int(label) == 0
    return Example({"premise": r["premise"], "hypothesis": r["hypothesis"]}, 0 if entailed else 1)


def _wsc_record(r: dict) -> Example:
    spans = r.get("target", r)  # published: nested under target; HF: top level
    return Example({"text": r["text"], "span1": spans["span1_text"], "span2": spans["span2_text"]},
                   int(bool(r["label"])))


TASKS: dict[str, Task] = {
    # The label is five stars ('great') or not; SmolLM2-135M ranks these reviews far better
    # with a sentiment question (zero-shot AUC 0.76 on 400 test reviews) than with "Is this a
    # five-star review? Yes/No" (0.51), so fine-tuning starts from a prompt the model reads.
    "fine_food": Task(
        "fine_food", "Amazon Fine Food reviews: five stars ('great', positive) or not (negative)",
        (" positive", " negative"),
        lambda f: f"Review: {f['text']}\nSentiment:",
        _fine_food_record, {"train": "train.csv", "eval": "test.csv"}, _fine_food_builtin),
    "sst2": Task(
        "sst2", "GLUE SST-2 sentiment (MeZO template)",
        (" terrible", " great"),
        lambda f: f"{f['text']} It was",
        _sst2_record, {"train": "train.tsv", "eval": "validation.tsv"}),
    "rte": Task(
        "rte", "SuperGLUE RTE entailment (MeZO template)",
        (" Yes", " No"),
        lambda f: f"{f['premise']}\nDoes this mean that \"{f['hypothesis']}\" is true? Yes or No?\n",
        _rte_record, {"train": "train.jsonl", "eval": "validation.jsonl"}),
    "wsc": Task(
        "wsc", "SuperGLUE WSC coreference (MeZO template)",
        (" No", " Yes"),
        lambda f: f"{f['text']}\nIn the previous sentence, does the pronoun \"{f['span2'].lower()}\" "
                  f"refer to {f['span1']}? Yes or No?\n",
        _wsc_record, {"train": "train.jsonl", "eval": "validation.jsonl"}),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task '{name}' (known: {', '.join(sorted(TASKS))}, or custom "
                         "with data.train_file / eval_file / template)")
    return TASKS[name]


def task_for(data) -> Task:
    """The task a config's data section names: a built-in one (wrapped by the model's chat
    template when data.chat_template is set), or `custom` from its keys."""
    if data.task == "custom":
        from prge.data.custom import custom_task

        return custom_task(data)
    task = get_task(data.task)
    return replace(task, chat_template=True) if data.chat_template else task

"""Example and Task: what every task is made of, whatever its kind (prge.data.kinds) and
wherever it comes from (the built-in registry in prge.data.tasks, or `data.task: custom` in
prge.data.custom, which both import this module and not each other)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from prge.data.kinds import CLASSIFICATION, TaskKind
from prge.data.locations import find_task_dir
from prge.data.sources import MissingField, MissingSplit, NullField, read_split
from prge.whitespace import emptiness, shown_names, shown_value

SPLITS = ("train", "eval")


@dataclass(frozen=True)
class Example:
    """One example: the fields its template renders, and its answer as its task's kind reads it.

    label     classification: index into the task's label words; multiple choice: index into
              `choices`; generation: -1
    response  generation: the answer the loss is taken on
    choices   multiple choice: this example's candidate continuations, each appended to the
              prompt as written (a leading space included where the text needs one)
    partial_scoring  multiple choice with partial scoring (WinoGrande, as lm-evaluation-harness
              scores it: Trinh & Le 2018, arXiv 1806.02847): for each candidate, the (context,
              continuation) texts lm-evaluation-harness requests, read as they are (no template);
              the continuation is the same for all, and `accuracy_partial` compares its
              log-likelihood after each context. Empty: no partial scoring
    where     the record it came from, for error messages ("sst2: train split in DIR: record 3",
              1-based); empty for hand-made examples"""
    fields: dict
    label: int
    response: str | None = None
    choices: tuple[str, ...] = ()
    partial_scoring: tuple[tuple[str, str], ...] = ()
    where: str = field(default="", compare=False)


@dataclass(frozen=True)
class Task:
    """A task: its kind, how to render a prompt, its label words (classification), and how a raw
    record (published files or the Hugging Face format) becomes Examples.

    parse(record) -> Example, or a list of Examples for a record that nests several (MultiRC: a
    paragraph with its questions and answers); KeyError / ValueError / TypeError / IndexError for
    a record without the expected fields or values.
    files: split ('train' / 'eval') -> file name in the published format; folder: the data
    folder's name under the data locations (default: the task's name)."""
    name: str
    description: str
    label_words: tuple[str, ...]
    template: Callable[[dict], str]
    parse: Callable[[dict], "Example | list[Example]"]
    files: dict = field(default_factory=dict)
    builtin: Callable[[str], list[Example]] | None = None  # default source when no directory is given
    reader: Callable[[str], list[Example]] | None = None  # custom tasks: reads their own files
    response_field: str | None = None  # generation: the record field of the response (named in errors)
    chat_template: bool = False
    kind: TaskKind = CLASSIFICATION
    folder: str = ""

    @property
    def data_folder(self) -> str:
        return self.folder or self.name

    def load(self, split: str, data_dir: str | Path | None = None) -> list[Example]:
        """The split's examples, each checked (see `check`). Raises ValueError naming the file
        (or task and split), the 1-based record and the field of a data mistake; MissingSplit
        (a FileNotFoundError) when the data has no such split."""
        if split not in SPLITS:
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
        (or whitespace-only, or invisible-only: whitespace.emptiness) template field, a prompt
        that renders to nothing, and what the task's kind requires of an answer (TaskKind.check)."""
        where = example.where or f"{self.name}: an example"
        for name, value in example.fields.items():
            if value is None:
                raise ValueError(f"{where}: field {shown_value(name)} is null")
            if why := emptiness(str(value)):
                raise ValueError(f"{where}: field {shown_value(name)} {why}")
        if not self.prompt(example).strip():
            raise ValueError(f"{where}: the template renders to nothing (only whitespace)")
        self.kind.check(self, example, where)

    def _load_files(self, split: str, data_dir) -> list[Example]:
        root = data_dir or find_task_dir(self.data_folder, self.name)
        examples = []
        for located, record in read_split(root, split, self.files, self.name):
            where = f"{self.name}: {split} split: {located}"
            try:
                parsed = self.parse(NullField(record))
            except MissingField as e:
                raise ValueError(f"{where}: no field {e} (it has: {shown_names(record)})") from e
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from e
            except (KeyError, TypeError, IndexError, AttributeError) as e:
                raise ValueError(f"{where} does not have the expected fields: {type(e).__name__}: {e}") from e
            if isinstance(parsed, Example):
                examples.append(replace(parsed, where=where))
            else:
                examples += [replace(e, where=f"{where}, item {j}") for j, e in enumerate(parsed, 1)]
        return examples

    def check_files(self, folder: Path) -> None:
        """Every split `folder` holds reads as this task's (ValueError naming file, record and
        field otherwise); FileNotFoundError when it holds none of the task's files."""
        found = 0
        for split in SPLITS:
            try:
                self.load(split, folder)
                found += 1
            except MissingSplit:
                pass
        if not found:
            raise FileNotFoundError(f"{self.name}: {folder} holds none of its files "
                                    f"({', '.join(self.files.values())}, or a datasets.save_to_disk directory)")

    def prompt(self, example: Example) -> str:
        return self.template(example.fields)


__all__ = ["Example", "Task", "MissingSplit", "SPLITS"]

"""`data.task: custom`: a task from config alone, on the user's own files. Its kind (prge.data.kinds)
is the key that says where the answer is:

    data:
      task: custom
      train_file: my/train.jsonl      # JSON lines, .json (an array or lines), CSV, TSV, or a datasets.save_to_disk directory
      eval_file: my/test.jsonl
      template: "Review: {text}\\nSentiment:"
      label_field: label
      label_words: {positive: " positive", negative: " negative"}   # classification
      # or: response_field: answer    # generation / SFT: the loss counts the response only
      # or: choices_field: options    # multiple choice: the record's own candidates (a list, or a
      #                               # JSON list in a CSV / TSV cell); label_field holds the gold
      #                               # one's index (0-based) or its text
      # chat_template: true           # wrap the prompt with the tokenizer's chat template

A multiple-choice candidate is appended to the prompt after one space (lm-evaluation-harness's
target delimiter) unless it starts with whitespace itself.

Everything that needs the data is checked when the files are read, before any step: a
missing file or field, an empty file, a label outside label_words or the candidates, a
template placeholder no record has, an empty field, response or candidate, a template that
renders to nothing (Task.check); when the prompts are tokenized, a label word, candidate or
response that yields no token. Errors name the config key, the file, the record (1-based) and
the field."""
from __future__ import annotations

import json
import math
import re
import string
import unicodedata
from pathlib import Path

from prge.data.examples import Example, Task
from prge.data.kinds import CLASSIFICATION, GENERATION, MULTIPLE_CHOICE
from prge.data.sources import CUSTOM_READERS, Located, MissingSplit, content_sha256, read_hf
from prge.jsonl import LONE_SURROGATE, NUL_ADVICE, as_written_json, is_unicode_text
from prge.whitespace import shortened, shown_name, shown_names, shown_value, visible

SPLIT_KEYS = {"train": "train_file", "eval": "eval_file"}
HF_SPLIT_NAMES = {"train": ("train",), "eval": ("validation", "test")}


def template_fields(template: str) -> list[str]:
    """The {placeholders} of a template, in order, each once."""
    try:
        parsed = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as e:
        raise ValueError(f"data.template: {e} in {shown_value(template)} (write {{{{ and }}}} for literal braces)") from e
    for name, spec, conversion in parsed:
        if spec or conversion:
            written = f"{{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}"
            raise ValueError(f"data.template: placeholder {shown_value(written)} in {shown_value(template)}: a placeholder "
                             f"is a field name only, like {shown_value('{' + name + '}')}")
    names = [name for name, _, _ in parsed]
    # a field name as a record holds it ("review text", "item-id"); '.' and '[' would be read as
    # attribute and index lookups, and a number as a position
    bad = next((n for n in names if not n.strip() or n.isdigit() or any(c in n for c in ".[]")), None)
    if bad is not None:
        raise ValueError(f"data.template: placeholder {shown_value('{' + bad + '}')} in {shown_value(template)}: a "
                         "placeholder is a field name "
                         "(spaces and dashes allowed; no '.', '[' or ']', and not a number), like {text}; rename a "
                         "field that holds such characters")
    return list(dict.fromkeys(names))


# A number as YAML keys and CSV / TSV cells spell it (sign, digits, fraction, exponent).
NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
BOOLEAN_TEXT = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}


def label_value(text: str) -> str | None:
    """The value a label's text spells, where it spells a boolean or a number: true / false
    (JSON's true, YAML's True, a CSV's TRUE); a number's value (1, 1.0, "1.0" and 1e0 are '1';
    1.50 and "1.5" are '1.5'); None for other text, a non-finite number, or digits too many to
    read."""
    if text in BOOLEAN_TEXT:
        return "true" if BOOLEAN_TEXT[text] else "false"
    if not NUMBER.fullmatch(text):
        return None
    try:
        number = float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:  # over sys.get_int_max_str_digits digits
        return None
    if isinstance(number, int):
        return str(number)
    return (str(int(number)) if number.is_integer() else repr(number)) if math.isfinite(number) else None


def label_text(value) -> str | None:
    """A record's label as text: a string as it is, JSON's true / false, a finite number as the
    file wrote it (jsonl.WrittenFloat / WrittenInt; a datasets directory's as Python writes it);
    None for what is no label (a non-finite number, a list, an object)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return _text_of(value)


def shown(value) -> str:
    """A record's value as its file spells it, for messages: JSON's true and null, a number as
    written (jsonl.WrittenFloat / WrittenInt), a list or object as JSON (cut: shortened), text
    quoted (a long one cut: shown_value)."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (list, dict)):  # JSON's spelling, as the file has it (null, not None)
        try:
            return shortened(json.dumps(value))
        except (TypeError, ValueError):  # a datasets directory's bytes, dates, ...: Python's
            return shown_value(value)
    return str(value) if isinstance(value, (int, float)) else shown_value(value)


def label_index(value, data, where: str) -> int:
    """The class of a record's label: the data.label_words key spelled as the label is (keys
    "01" and "1" stay two classes), else the one key of the same value (label_value: JSON's 1.0
    or a CSV's "1.0" is the key 1, true the key True); ValueError naming the record for a label
    that matches no key, or two keys by value only ("001" with keys "01" and "1")."""
    keys = [label for label, _ in data.label_words]
    text = label_text(value)
    if text is None:
        raise ValueError(f"{where}: {shown_name(data.label_field)} = {shown(value)} is no label (a finite number or text)")
    if text in keys:
        return keys.index(text)
    wanted = label_value(text)
    same = [i for i, key in enumerate(keys) if wanted is not None and label_value(key) == wanted]
    if len(same) > 1:
        raise ValueError(f"{where}: {shown_name(data.label_field)} = {shown(value)} is the value of data.label_words "
                         f"{' and '.join(shown_value(keys[i]) for i in same)}, and the spelling of neither; write it as "
                         "one of them")
    if not same:
        composed = [key for key in keys if unicodedata.normalize("NFC", key) == unicodedata.normalize("NFC", text)]
        hint = (f"; it is {shown_value(composed[0])} written with other code points (Unicode normalisation: "
                f"{_normal_form(text)} here, {_normal_form(composed[0])} in the config), two different texts: write "
                "both alike" if composed else "")
        raise ValueError(f"{where}: {shown_name(data.label_field)} = {shown(value)} is not one of data.label_words "
                         f"({shown_names(keys)}){hint}")
    return same[0]


def _normal_form(text: str) -> str:
    """'NFC', 'NFD' or 'mixed': how a text's accented letters are written."""
    return next((form for form in ("NFC", "NFD") if unicodedata.is_normalized(form, text)), "mixed")


def read_records(path: Path, split: str) -> Located:
    """(where, record) of each record of data.train_file / eval_file: JSON lines, CSV, TSV (both
    quoted, with a header line) or a datasets.save_to_disk directory ('train'; 'validation' or
    'test' for eval)."""
    key = f"data.{SPLIT_KEYS[split]}"
    if path.is_dir():
        if not any((path / name).is_file() for name in ("dataset_dict.json", "state.json")):
            raise ValueError(f"{key}: {path} is a directory but not one datasets.save_to_disk writes (it has no "
                             "dataset_dict.json or state.json); name a data file or such a directory")
        try:
            return read_hf(path, split, HF_SPLIT_NAMES[split])
        except ImportError as e:
            raise ImportError(f"{key}: {path}: {e}") from e
        except MissingSplit as e:
            raise MissingSplit(f"{key}: {e}") from None
        except (OSError, ValueError) as e:  # datasets' own: a damaged or half-written directory
            raise ValueError(f"{key}: {visible(str(path))}: not a readable datasets.save_to_disk directory "
                             f"({type(e).__name__}: {e})") from None
    if not path.is_file():
        raise FileNotFoundError(f"{key}: {visible(str(path))} not found")
    suffix = path.suffix.lower()
    if suffix in CUSTOM_READERS:
        try:
            records = CUSTOM_READERS[suffix](path, key)
        except ValueError as e:
            raise ValueError(f"{key}: {e}") from e
    else:
        raise ValueError(f"{key}: {path}: unknown format {shown_value(suffix)} (allowed: {', '.join(CUSTOM_READERS)}, "
                         "or a datasets.save_to_disk directory)")
    if not records:
        raise ValueError(f"{key}: {path} holds no records")
    return records


def _choices(value, where: str, key: str) -> tuple[str, ...]:
    """A record's candidates: a list of strings, or a string holding a JSON list (CSV / TSV)."""
    if isinstance(value, str):
        try:
            value = as_written_json(value)
        except json.JSONDecodeError:
            raise ValueError(f"{where}: {key} = {shown_value(value)} is not a list of candidates (in CSV / TSV, write a JSON "
                             'list such as ["Paris", "Rome"])') from None
    if not isinstance(value, (list, tuple)) or any(_text_of(c) is None for c in value):
        raise ValueError(f"{where}: {key} must be a list of candidate texts, got {shown_value(value)}")
    if len(value) < 2:
        raise ValueError(f"{where}: {key} holds {len(value)} candidate(s); multiple choice needs at least 2")
    texts = [_text_of(c) for c in value]
    for i, text in enumerate(texts):
        if not is_unicode_text(text):
            raise ValueError(f"{where}: {key}: candidate {i} holds {LONE_SURROGATE}: {NUL_ADVICE}")
    return tuple(t if t[:1].isspace() else " " + t for t in texts)


INTEGER = re.compile(r"-?[0-9]+")  # an index spelled as text (ASCII digits only: int() reads others too)


def _choice_index(value, choices: tuple[str, ...], where: str, key: str, typed: bool) -> int:
    """The gold candidate: a number is an index (a float only when integral: 1.0 as pandas writes
    it); a string is the candidate with that text, or, when no candidate has it and it spells an
    integer, that index. A string that is one candidate's text and spells another's index
    (candidates "1", "2", "3", label "2") is that text in JSON lines and datasets (`typed`:
    their strings and numbers differ), and refused in CSV / TSV, where every value is text and
    either reading could be meant. A number is an index also among candidates that are numbers
    ([1.0, 2.0] with label 1.0 is the second), as JSON lines' numbers always are."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{where}: {key} = {shown(value)} is neither a candidate index nor a candidate's text")
    stripped = [c.strip() for c in choices]
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{where}: {key} = {shown_value(value)} is not an integer index (0..{len(choices) - 1})")
        value = int(value)
    if isinstance(value, int):
        index, match = value, None
    else:
        text = value.strip()
        index = int(text) if INTEGER.fullmatch(text) else None
        match = stripped.index(text) if text in stripped else None
    if match is not None:
        if not typed and index is not None and index != match and 0 <= index < len(choices):
            raise ValueError(f"{where}: {key} = {shown_value(value)} is candidate {match}'s text and also the index of candidate "
                             f"{index} ({shown_value(stripped[index])}); in CSV / TSV every value is text, so either reading "
                             "could be meant. Use JSON lines, with the index as a number or the text as a string")
        return match
    if index is None:
        raise ValueError(f"{where}: {key} = {shown_value(value)} is not one of its candidates ({shown_names(stripped)})")
    if not 0 <= index < len(choices):
        raise ValueError(f"{where}: {key} = {index} is outside 0..{len(choices) - 1} "
                         f"(its {len(choices)} candidates)")
    return index


def _text_of(value) -> str | None:
    """A field's value as text: a string, or a finite number as the file wrote it (JSON lines'
    1.50 stays 1.50: jsonl.WrittenFloat; a datasets directory's floats as Python writes them);
    None for a list, object, boolean, NaN or infinity, whose Python spelling is no text the file
    holds."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool) or isinstance(value, float) and math.isfinite(value):
        return str(value)
    return None


def _field_text(value, where: str, field: str) -> str:
    """A record's field as prompt or response text (_text_of); ValueError naming the field."""
    text = _text_of(value)
    if text is None:
        raise ValueError(f"{where}: field {shown_value(field)} = {shown(value)} is not text (a string or a finite number)")
    return text


def split_paths(data) -> dict[str, Path]:
    """Where a custom task's splits are read from: data.train_file / data.eval_file under
    data.data_dir, or under the working directory without one (split -> path), for the files the
    config names (no training file under data.train_from: validation)."""
    base = Path(data.data_dir) if data.data_dir else Path.cwd()
    return {split: base / getattr(data, key) for split, key in SPLIT_KEYS.items() if getattr(data, key)}


def data_files(data) -> dict[str, dict]:
    """What a custom task's data is, for its run's summary: split -> {"path": the absolute path,
    "sha256": its content's digest (sources.content_sha256)}, for the splits that are there. A
    report tells tasks apart by it: the same file however a config spells its path is one task,
    two files of one name are two."""
    out = {}
    for split, path in split_paths(data).items():
        digest = content_sha256(path)
        if digest is not None:
            out[split] = {"path": str(path.resolve()), "sha256": digest}
    return out


def check_template_fields(template: str, fields: list[str], kind, data) -> None:
    """ValueError naming data.template when its prompts could not tell examples apart (no
    placeholder: every prompt is one text) or would hold their own answers (the label field, or
    a generation task's response field: accuracy would measure copying). A multiple-choice
    prompt may list its candidates (choices_field); only the gold one's index is the answer."""
    if not fields:
        raise ValueError(f"data.template: {shown_value(template)} has no {{field}} placeholder, so every example's prompt is the "
                         "same text and the model cannot tell them apart; put the fields it reads in braces, like "
                         "{text}")
    answer, key = (data.response_field, "data.response_field") if kind is GENERATION else (data.label_field,
                                                                                          "data.label_field")
    if answer in fields:
        raise ValueError(f"data.template: {shown_value(template)} writes {{{shown_name(answer)}}}, the field of the "
                         f"answer ({key}): every "
                         "prompt would show its own answer; leave it out of the template")


def custom_task(data) -> Task:
    """The Task a config's data section describes (data.task == 'custom'): classification with
    label_words, generation with response_field, multiple choice with choices_field. Raises
    ValueError naming data.template for a malformed template, one without a placeholder and
    one that writes the answer's field (check_template_fields)."""
    fields = template_fields(data.template)
    paths = split_paths(data)
    choices_field = getattr(data, "choices_field", "")  # absent from extensions built before it
    if choices_field:
        kind, answer_fields = MULTIPLE_CHOICE, [choices_field, data.label_field]
    elif data.response_field:
        kind, answer_fields = GENERATION, [data.response_field]
    else:
        kind, answer_fields = CLASSIFICATION, [data.label_field]
    check_template_fields(data.template, fields, kind, data)

    def parse(record: dict, where: str, typed: bool = True) -> Example:
        missing = [f for f in fields + answer_fields if f not in record]
        if missing:
            raise ValueError(f"{where} has no field {shown_value(missing[0])} (it has: {shown_names(record)})")
        null = [f for f in fields + answer_fields if record[f] is None]
        if null:
            raise ValueError(f"{where}: field {shown_value(null[0])} is null")
        values = {f: _field_text(record[f], where, f) for f in fields}
        if kind is GENERATION:
            return Example(values, -1, response=_field_text(record[data.response_field], where, data.response_field),
                           where=where)
        if kind is MULTIPLE_CHOICE:
            choices = _choices(record[choices_field], where, f"data.choices_field {shown_value(choices_field)}")
            label = _choice_index(record[data.label_field], choices, where, f"data.label_field {shown_value(data.label_field)}",
                                  typed=typed)
            return Example(values, label, choices=choices, where=where)
        return Example(values, label_index(record[data.label_field], data, where), where=where)

    def load(split: str) -> list[Example]:
        key = f"data.{SPLIT_KEYS[split]}"
        if split not in paths:
            raise MissingSplit(f"{key}: not given")
        # JSON lines and datasets directories keep numbers apart from strings; CSV / TSV do not.
        typed = not (paths[split].is_file() and paths[split].suffix.lower() in (".csv", ".tsv"))
        return [parse(r, f"{key}: {located}", typed) for located, r in read_records(paths[split], split)]

    source = (str(paths["train"]) if "train" in paths
              else f"{paths['eval']} (trained on a seeded part of it: data.train_from: validation)")
    return Task("custom", f"custom {kind.name} task from {source}",
                tuple(word for _, word in data.label_words),
                lambda f: data.template.format(**f), lambda record: parse(record, "a record"),
                reader=load, response_field=data.response_field or None, chat_template=data.chat_template,
                kind=kind)

"""Raw records of one split from the formats the task loaders accept: the published
files (TSV / CSV with a header line, JSON lines, a JSON array), a Hugging Face `datasets`
directory written by save_to_disk, or hf:NAME[/CONFIG] loaded from the hub (needs internet)."""
from __future__ import annotations

import csv
import hashlib
import json
import sys
from pathlib import Path

from prge.jsonl import LONE_SURROGATE, NUL_ADVICE, as_written_json, is_unicode_text, read_jsonl_numbered, unique_keys
from prge.whitespace import shown_names, shown_value

HF_SPLITS = {"train": "train", "eval": "validation"}


def content_sha256(path: Path) -> str | None:
    """Hex sha256 of a data file's bytes, or of a `datasets` directory's files (each one's path
    below it, then its bytes, in path order); None where nothing is at `path` (a split the data
    lacks, or hf:NAME on the hub)."""
    path = Path(path)
    if path.is_file():
        files = [(path.name, path)]
    elif path.is_dir():
        files = sorted((f.relative_to(path).as_posix(), f) for f in path.rglob("*") if f.is_file())
    else:
        return None
    digest = hashlib.sha256()
    for name, file in files:
        if path.is_dir():
            digest.update(f"{name}\0{file.stat().st_size}\0".encode())
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class MissingSplit(FileNotFoundError):
    """The data holds no such split (e.g. BoolQ's published files: validation only)."""


Located = list[tuple[str, dict]]  # (where: "FILE: record N (line L)" or "FILE: record N", record)


class MissingField(KeyError):
    """A task read a field its record does not have."""


class NullField(dict):
    """A record whose null values are errors when a task reads them (read as text, a null would
    become the word 'None', and a row shorter than its header would train on it silently)."""

    def __getitem__(self, key):
        if key not in self:
            raise MissingField(key)
        value = super().__getitem__(key)
        if value is None:
            raise ValueError(f"field {shown_value(key)} is null")
        if isinstance(value, dict):
            return NullField(value)
        if isinstance(value, list):
            if any(v is None for v in value):
                raise ValueError(f"field {shown_value(key)} holds a null")
            return [NullField(v) if isinstance(v, dict) else v for v in value]
        return value

    def get(self, key, default=None):
        return self[key] if key in self else default


def _refuse_nul(where: str, record) -> None:
    """ValueError naming the record and field when a text value holds a NUL character (a binary
    file read as text, or a broken export: the tokenizer would train on it silently)."""
    def walk(value, field):
        if isinstance(value, str):
            if "\x00" in value:
                raise ValueError(f"{where}: field {shown_value(field)} holds a NUL character (\\x00): {NUL_ADVICE}")
            if not value.isascii() and not is_unicode_text(value):
                raise ValueError(f"{where}: field {shown_value(field)} holds {LONE_SURROGATE}: {NUL_ADVICE}")
        elif isinstance(value, dict):
            for k, v in value.items():
                name = f"{field}.{k}" if field else str(k)
                if "\x00" in str(k):
                    raise ValueError(f"{where}: the field name {shown_value(name)} holds a NUL character (\\x00): {NUL_ADVICE}")
                walk(v, name)
        elif isinstance(value, list):
            for v in value:
                walk(v, field)
    walk(record, "")


FIELD_LIMIT = 1 << 26  # characters a CSV / TSV field may hold (the csv module's default is 128 Ki)


def read_delimited(path: Path, delimiter: str, quoted: bool = True, key: str = "") -> Located:
    """Rows of a CSV / TSV with a header line as records. quoted=False reads GLUE's TSVs, which
    are not quoted (MRPC has unbalanced '"'). A byte-order mark is dropped; blank lines are
    skipped. key: the config key that named the file (data.train_file), put before the note on
    a field over several lines. ValueError naming the file and line for a malformed quote (an
    unclosed one would swallow the rows after it), a header with an empty or repeated name, or a
    row whose field count differs from the header's."""
    kind = "CSV" if delimiter == "," else "TSV"
    csv.field_size_limit(max(csv.field_size_limit(), FIELD_LIMIT))
    located, start, header, spanning = [], 1, None, None
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter, strict=quoted,
                                quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE)
            for row in reader:
                if not row:  # a blank line
                    start = reader.line_num + 1
                    continue
                if header is None:
                    if any("\x00" in name for name in row):
                        raise ValueError(f"{path}:{start}: the header line holds a NUL character (\\x00): {NUL_ADVICE}")
                    repeated = sorted({name for name in row if row.count(name) > 1})
                    if "" in row or repeated:
                        raise ValueError(f"{path}:{start}: the header line names a column "
                                         f"{'with an empty name' if '' in row else 'twice: ' + shown_names(repeated)}")
                    header = row
                elif len(row) != len(header):
                    raise ValueError(
                        f"{path}:{start}: {len(row)} fields where the header line has {len(header)} "
                        f"({shown_names(header)}): a missing or extra {kind} field, or an unclosed quote")
                else:
                    where = f"{path}: record {len(located) + 1} (line {start})"
                    record = dict(zip(header, row))
                    _refuse_nul(where, record)
                    if reader.line_num > start and spanning is None:
                        spanning = (where, start, reader.line_num)
                    located.append((where, record))
                start = reader.line_num + 1
    except csv.Error as e:
        if "NUL" in str(e):  # Python 3.10's csv refuses the character itself
            raise ValueError(f"{path}:{start}: a NUL character (\\x00): {NUL_ADVICE}") from None
        raise ValueError(f"{path}:{start}: malformed {kind} ({e}); a quoted field must end with a quote") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
                         "save the file as UTF-8") from e
    if spanning is not None:  # valid CSV, but also what a stray quote closed by a later one reads as
        where, first, last = spanning
        many = sum(1 for w, r in located if any("\n" in v or "\r" in v for v in r.values()))
        named = f"{key}: " if key else ""
        print(f"[prge] note: {named}{where}: a quoted field spans lines {first}-{last} ({many} record(s) of "
              f"{path.name} hold line breaks); if a quote was left open there, rows after it were read into that "
              "field", file=sys.stderr)
    return located


def read_jsonl_objects(path: Path) -> Located:
    located = []
    for number, record in read_jsonl_numbered(path, written=True):
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object per line")
        where = f"{path}: record {len(located) + 1} (line {number})"
        _refuse_nul(where, record)
        located.append((where, record))
    return located


def read_json_array(path: Path) -> Located:
    """A file holding one JSON array of objects (Hugging Face `to_list()` dumps, e.g. ARC-Easy).
    ValueError naming the file for anything else."""
    try:
        records = as_written_json(Path(path).read_text(encoding="utf-8-sig"), object_pairs_hook=unique_keys)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
                         "save the file as UTF-8") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from e
    except ValueError as e:  # a key given twice, or an integer too long for Python
        raise ValueError(f"{path}: {e}") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ValueError(f"{path}: expected one JSON array of objects")
    located = [(f"{path}: record {i}", r) for i, r in enumerate(records, 1)]
    for where, record in located:
        _refuse_nul(where, record)
    return located


def read_json_records(path: Path) -> Located:
    """A custom task's .json file: one JSON array of objects when it starts with '[' (pandas'
    to_json(orient="records"), Hugging Face to_list() dumps), else JSON lines (to_json(lines=True))."""
    with open(path, "rb") as f:
        start = f.read(4096).decode("utf-8-sig", errors="replace").lstrip()
    return read_json_array(path) if start.startswith("[") else read_jsonl_objects(path)


# File suffix -> reader. Built-in tasks read their published files: GLUE's TSVs unquoted (MRPC
# has unbalanced '"'), .json as one array (Hugging Face to_list() dumps). A custom task's files
# are the user's own: TSV quoted as CSV is, .json as an array or JSON lines (read_json_records).
READERS = {".tsv": lambda p: read_delimited(p, "\t", quoted=False), ".csv": lambda p: read_delimited(p, ","),
           ".jsonl": read_jsonl_objects, ".json": read_json_array}
# A custom task's readers take the config key that named the file, for their notes.
CUSTOM_READERS = {".jsonl": lambda p, key: read_jsonl_objects(p), ".json": lambda p, key: read_json_records(p),
                  ".csv": lambda p, key: read_delimited(p, ",", key=key),
                  ".tsv": lambda p, key: read_delimited(p, "\t", key=key)}


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


def read_hf(location: str | Path, split: str, names: tuple[str, ...] | None = None) -> Located:
    """Rows of split ('train' or 'eval') of a save_to_disk directory (or hf:NAME[/CONFIG] from
    the hub), from the first of `names` it has (default: train, or validation for eval).
    MissingSplit when a save_to_disk directory has none of them."""
    datasets = _datasets()
    names = names or (HF_SPLITS[split],)
    if is_hf_spec(location):
        name, _, config = str(location)[3:].partition("/")
        dataset, found = datasets.load_dataset(name, config or None, split=names[0]), names[0]
    else:
        loaded = datasets.load_from_disk(str(location))
        if isinstance(loaded, datasets.DatasetDict):
            present = [n for n in names if n in loaded]
            if not present:
                raise MissingSplit(f"{location}: no {' or '.join(repr(n) for n in names)} split (has {shown_names(loaded)})")
            loaded, found = loaded[present[0]], present[0]
        else:
            found = "its only"
        dataset = loaded
    located = [(f"{location} ({found} split): record {i}", dict(row)) for i, row in enumerate(dataset, 1)]
    for where, record in located:
        _refuse_nul(where, record)
    return located


def read_split(root: str | Path, split: str, files: dict[str, str], task: str) -> Located:
    """(where, record) of each record of a split from root, whatever its format. MissingSplit
    when the split's file (or the save_to_disk split) is not there."""
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
    except ValueError as e:
        raise ValueError(f"{task}: {split} split: {e}") from e
    if not records:
        raise ValueError(f"{task}: {path} holds no records")
    return records

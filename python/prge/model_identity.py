"""Which model a run trained on: a fingerprint of the model directory's config.json and weight
files, stored in the run's checkpoints and summary, so that a resume, an adapter export,
`prge generate` on the run or a sweep reaching it again refuses a directory that holds another
model now (weights saved over, another model copied to the same path) instead of pairing the
trained adapters with it.

The weights are sampled, not read whole: each safetensors file's header (every tensor's name,
dtype, shape and place) and, of every tensor, SAMPLE bytes at its start, middle and end, so that
a 7B model's fingerprint reads a few MB. Every tensor is sampled: weights regenerated, retrained,
merged with an adapter or replaced change it; an edit confined to bytes between the samples does
not. config.json counts by content (its keys sorted), so a moved or copied directory, or one
saved with other spacing, is the same model; the same weights saved in another layout (other
shards, another header) count as another model, as the files differ."""
from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path

SAMPLE = 4096  # bytes read at each of a tensor's start, middle and end
FINGERPRINT = re.compile(r"[0-9a-f]{64}")  # what model_fingerprint returns


def weight_paths(model_dir: str | Path) -> list[Path]:
    """The files a model's weights load from (prge._core.weight_files: model.safetensors or the
    shards its index names) and prge_quantized.safetensors where present."""
    from prge._core import QUANTIZED_WEIGHTS_FILE, weight_files

    model_dir = Path(model_dir)
    files = [Path(f) for f in weight_files(str(model_dir))]
    quantized = model_dir / QUANTIZED_WEIGHTS_FILE
    return files + ([quantized] if quantized.is_file() else [])


def _tensor_spans(f, size: int) -> tuple[bytes, int, list[tuple[int, int]]] | None:
    """(header, where the data starts, every tensor's (begin, end) in the data, sorted) of a
    safetensors file open at its start; None for a file that is not safetensors or whose header
    gives a tensor offsets outside its data (the weights' loader names what is wrong)."""
    prefix = f.read(8)
    length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else size
    header = f.read(length) if 8 + length <= size else b""
    try:
        tensors = json.loads(header) if header else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(tensors, dict):
        return None
    base = 8 + length
    spans = [entry.get("data_offsets") if isinstance(entry, dict) else None
             for name, entry in tensors.items() if name != "__metadata__"]
    if not all(isinstance(span, list) and len(span) == 2 and all(type(x) is int for x in span)
               and 0 <= span[0] <= span[1] <= size - base for span in spans):
        return None
    return header, base, sorted(tuple(span) for span in spans)


def _add_safetensors(digest, path: Path) -> None:
    """The file's header whole, then SAMPLE bytes at each tensor's start, middle and end (all of a
    tensor up to 3 * SAMPLE bytes); a file _tensor_spans cannot read is read whole."""
    size = path.stat().st_size
    digest.update(f"{path.name}\0{size}\0".encode())
    with open(path, "rb") as f:
        parsed = _tensor_spans(f, size)
        if parsed is None:  # here, its bytes count
            f.seek(0)
            while chunk := f.read(1 << 24):
                digest.update(chunk)
            return
        header, base, spans = parsed
        digest.update(header)
        for begin, end in spans:
            if end - begin <= 3 * SAMPLE:
                samples = [(begin, end - begin)]
            else:
                samples = [(at, SAMPLE) for at in (begin, begin + (end - begin - SAMPLE) // 2, end - SAMPLE)]
            for at, count in samples:
                f.seek(base + at)
                digest.update(f.read(count))


def model_fingerprint(model_dir: str | Path) -> str:
    """64 hex digits: sha256 over config.json's content (keys sorted) and each weight file's
    header and samples of every tensor (see the module's text), each under its file name.
    Raises OSError naming a file that cannot be read."""
    model_dir = Path(model_dir)
    digest = hashlib.sha256()
    config = (model_dir / "config.json").read_text()
    try:
        config = json.dumps(json.loads(config), sort_keys=True)
    except json.JSONDecodeError:  # the loader names it; here, its text counts
        pass
    digest.update(b"config.json\0" + config.encode())
    for path in weight_paths(model_dir):
        _add_safetensors(digest, path)
    return digest.hexdigest()


START_AGAIN = ("point model.name at the model the run trained on, or start the run again on this one (--overwrite, "
               "or delete its directory)")


def check_same_model(stored, model_dir: str | Path, where: str, current: str | None = None,
                     remedy: str = START_AGAIN) -> None:
    """ValueError naming `where` (the file that stored the fingerprint) and model_dir when the
    directory holds another model than the stored fingerprint's, or when what is stored is not a
    fingerprint (a damaged or edited file); a run written before prge stored one (None) is taken
    as it is. `current`: model_dir's fingerprint, when computed; `remedy`: what the message
    tells the user to do about another model."""
    if stored is None:
        return
    if not isinstance(stored, str) or not FINGERPRINT.fullmatch(stored):
        raise ValueError(f"{where}: its model fingerprint is not what prge writes (64 hex digits): the file is "
                         "damaged or was edited")
    current = current or model_fingerprint(model_dir)
    if stored != current:
        from prge.models.gguf_convert import MARKER

        converted = (Path(model_dir) / MARKER).is_file()  # prge's conversion of a GGUF file, in its cache
        raise ValueError(f"{where}: the run trained on another model than {model_dir} holds now (its config.json or "
                         f"weights differ: model fingerprint {stored[:12]}..., now {current[:12]}..."
                         + ("; it is prge's conversion of a GGUF file, which a prge version converting otherwise "
                            "also changes" if converted else "")
                         + f"); {remedy}")

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
shards, another header) count as another model, as the files differ.

A run started from a PEFT adapter (adapter.init_from) trains on the base plus that adapter, and
only its B is stored with the run (A is read from the adapter again on every load): its
fingerprint also covers the adapter's adapter_config.json (by content) and its weights (whole),
so that an adapter saved over since is refused as another model too. Runs written before the
adapter counted, whose fingerprint is the base's alone, are taken as they are."""
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


def _json_content(path: Path) -> bytes:
    """A JSON file's content, keys sorted; its bytes where it is not JSON (its loader names that)."""
    data = path.read_bytes()
    try:
        return json.dumps(json.loads(data), sort_keys=True).encode()
    except (UnicodeDecodeError, json.JSONDecodeError):
        return data


def model_fingerprint(model_dir: str | Path, adapter_dir: str | Path | None = None) -> str:
    """64 hex digits: sha256 over config.json's content (keys sorted) and each weight file's
    header and samples of every tensor (see the module's text), each under its file name; with
    `adapter_dir` (the run's adapter.init_from), also over that adapter's config's content and
    its weights. Raises OSError naming a file that cannot be read."""
    model_dir = Path(model_dir)
    digest = hashlib.sha256()
    digest.update(b"config.json\0" + _json_content(model_dir / "config.json"))
    for path in weight_paths(model_dir):
        _add_safetensors(digest, path)
    if adapter_dir is not None:
        from prge.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS

        for path in (Path(adapter_dir) / ADAPTER_CONFIG, Path(adapter_dir) / ADAPTER_WEIGHTS):
            try:
                if not path.is_file():  # loading the adapter names what is missing
                    digest.update(f"adapter {path.name}\0absent".encode())
                elif path.name == ADAPTER_CONFIG:
                    digest.update(f"adapter {path.name}\0".encode() + _json_content(path))
                else:
                    digest.update(f"adapter {path.name}\0".encode() + path.read_bytes())
            except PermissionError:  # loading the adapter names it, at adapter.init_from's place
                digest.update(f"adapter {path.name}\0unreadable".encode())
    return digest.hexdigest()


def starting_adapter(config) -> str | None:
    """The PEFT adapter a run's config starts from (adapter.init_from), None when it has none."""
    return config.adapter.init_from if config.use_adapter and config.adapter.init_from else None


def run_model_fingerprint(config, model_dir: str | Path) -> str:
    """The fingerprint of what a run of `config` trains on: model_dir, and its starting adapter."""
    return model_fingerprint(model_dir, starting_adapter(config))


START_AGAIN = ("point model.name at the model the run trained on, or start the run again on this one (--overwrite, "
               "or delete its directory)")


def check_same_model(stored, model_dir: str | Path, where: str, current: str | None = None,
                     remedy: str = START_AGAIN, adapter_dir: str | Path | None = None) -> None:
    """ValueError naming `where` (the file that stored the fingerprint) and model_dir when the
    directory holds another model than the stored fingerprint's (with `adapter_dir`, the run's
    adapter.init_from: or that adapter differs), or when what is stored is not a fingerprint (a
    damaged or edited file); a run written before prge stored one (None), or before the
    starting adapter counted (the base's alone), is taken as it is. `current`: the fingerprint
    of model_dir (and adapter_dir), when computed; `remedy`: what the message tells the user to
    do about another model."""
    if stored is None:
        return
    if not isinstance(stored, str) or not FINGERPRINT.fullmatch(stored):
        raise ValueError(f"{where}: its model fingerprint is not what prge writes (64 hex digits): the file is "
                         "damaged or was edited")
    if adapter_dir is not None and not Path(adapter_dir).is_dir():
        from prge.adapters import ADAPTER_CONFIG

        relative = "" if Path(adapter_dir).is_absolute() else f", read from the current directory {Path.cwd()}"
        raise FileNotFoundError(f"{where}: the run started from the PEFT adapter adapter.init_from: {adapter_dir}, "
                                f"which is not there{relative} (its {ADAPTER_CONFIG} and weights are needed: only B "
                                "is stored with the run); run from the directory the run was started in, or put the "
                                "adapter back")
    current = current or model_fingerprint(model_dir, adapter_dir)
    if stored != current:
        if adapter_dir is not None and stored == model_fingerprint(model_dir):
            return  # written before the starting adapter counted
        from prge.models.gguf_convert import MARKER

        converted = (Path(model_dir) / MARKER).is_file()  # prge's conversion of a GGUF file, in its cache
        what = f"{model_dir} holds now (its config.json or weights differ" if adapter_dir is None else (
            f"{model_dir} with the adapter.init_from adapter {adapter_dir} make now (the model's config.json or "
            "weights, or the adapter's, differ")
        raise ValueError(f"{where}: the run trained on another model than {what}: model fingerprint "
                         f"{stored[:12]}..., now {current[:12]}..."
                         + ("; it is prge's conversion of a GGUF file, which a prge version converting otherwise "
                            "also changes" if converted else "")
                         + f"); {remedy}")

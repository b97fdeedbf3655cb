"""Which model a run trained on: a fingerprint of the model directory's config.json and weight
files, stored in the run's checkpoints and summary, so that a resume, an adapter export or
`prge generate` on the run refuses a directory that holds another model now (weights saved over,
another model copied to the same path) instead of pairing the trained adapters with it.

The weights are sampled, not read whole: each weight file's name, size, first MiB (its
safetensors header and first tensors) and 32 evenly spaced 64 KiB blocks, so that a 7B model's
fingerprint reads ~35 MB. Weights regenerated, retrained or replaced change it; a moved or copied
directory does not."""
from __future__ import annotations

import hashlib
from pathlib import Path

HEAD = 1 << 20  # bytes read from each file's start
BLOCK = 1 << 16  # bytes of each sampled block
SAMPLES = 32  # blocks sampled from each file's rest


def weight_paths(model_dir: str | Path) -> list[Path]:
    """The files a model's weights load from (prge._core.weight_files: model.safetensors or the
    shards its index names) and prge_quantized.safetensors where present, then config.json."""
    from prge._core import weight_files

    model_dir = Path(model_dir)
    files = [Path(f) for f in weight_files(str(model_dir))]
    quantized = model_dir / "prge_quantized.safetensors"
    return files + ([quantized] if quantized.is_file() else []) + [model_dir / "config.json"]


def model_fingerprint(model_dir: str | Path) -> str:
    """64 hex digits: sha256 over config.json (whole) and the weight files' samples (see the
    module's text), each under its file name. Raises OSError naming a file that cannot be read."""
    digest = hashlib.sha256()
    for path in weight_paths(model_dir):
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        with open(path, "rb") as f:
            if path.name == "config.json" or size <= HEAD + SAMPLES * BLOCK:
                digest.update(f.read())
                continue
            digest.update(f.read(HEAD))
            stride = (size - HEAD - BLOCK) // (SAMPLES - 1)
            for i in range(SAMPLES):
                f.seek(HEAD + i * stride)
                digest.update(f.read(BLOCK))
    return digest.hexdigest()


def check_same_model(stored: str | None, model_dir: str | Path, where: str, current: str | None = None) -> None:
    """ValueError naming `where` (the file that stored the fingerprint) and model_dir when the
    directory holds another model than the stored fingerprint's; a run written before prge
    stored one (None) is taken as it is. `current`: model_dir's fingerprint, when computed."""
    if stored is None:
        return
    current = current or model_fingerprint(model_dir)
    if stored != current:
        raise ValueError(f"{where}: the run trained on another model than {model_dir} holds now (its config.json or "
                         f"weights differ: model fingerprint {stored[:12]}..., now {current[:12]}...); point "
                         "model.name at the model the run trained on, or train again on this one")

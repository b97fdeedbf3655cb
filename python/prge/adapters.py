"""Trained adapters out of prge, and PEFT adapters in.

  export_peft(run_dir, out)    adapter_config.json + adapter_model.safetensors in PEFT's LoRA
                               format (the frozen random A saved beside the trained B), which
                               peft.PeftModel.from_pretrained loads onto transformers' model
  export_merged(run_dir, out)  a full Hugging Face model directory with (alpha / r) B A folded
                               into every adapted W (config, safetensors, tokenizer files)
  load_peft(model, dir, opts)  a PEFT LoRA adapter's A and B as a model's starting point
                               (adapter.init_from)
  check_peft_adapter(dir, spec, opts)  the same adapter's config and tensors against the
                               model's family and the adapter options, from config.json
                               alone, without the base weights (prge check)

PEFT names a LoRA pair after the module it wraps:
base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight ([r, in]) and .lora_B.weight
([out, r]); its scaling is lora_alpha / r (lora_alpha / sqrt(r) with use_rslora), with r and
lora_alpha overridden per module by rank_pattern / alpha_pattern, as prge's AdapterOptions
computes it. Every adapter_config.json field that changes PeftModel's forward is either read
(the ones above and target_modules) or refused by name (PEFT_REFUSED); fields that only
describe training or initialisation are accepted (PEFT_WITHOUT_EFFECT); any other field is refused."""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from prge import durable, run_summary
from prge.model_identity import check_same_model, starting_adapter
from prge.overrides import read_text
from prge.whitespace import shortened, shown_value

PEFT_PREFIX = "base_model.model."
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"

# What transformers reads a tokenizer (and generation defaults) from: every one the model
# directory has goes into a merged export (a SentencePiece tokenizer.model alone makes a tokenizer).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "chat_template.json",
                   "special_tokens_map.json", "added_tokens.json", "tokenizer.model", "spiece.model",
                   "vocab.json", "merges.txt", "vocab.txt", "generation_config.json")
CHAT_TEMPLATES_DIR = "additional_chat_templates"  # transformers' folder of named chat templates
# What AutoProcessor / AutoImageProcessor read beside them (a multimodal wrapper's, gemma3's):
# a merged wrapper keeps its vision tower, and these with it.
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "video_preprocessor_config.json")


# Fields that leave PeftModel's forward of a saved LoRA adapter unchanged: bookkeeping, and
# initialisation / training settings (the saved A and B are what counts; dropout acts only in
# training).
PEFT_WITHOUT_EFFECT = {
    "task_type", "peft_type", "auto_mapping", "peft_version", "base_model_name_or_path", "revision",
    "inference_mode", "lora_dropout", "loftq_config", "eva_config", "corda_config",
    "lora_ga_config", "megatron_core", "qalora_group_size", "runtime_config"}
# Fields prge reads: the adapter's modules, ranks and scalings, and how it was initialised.
PEFT_READ = {"r", "lora_alpha", "target_modules", "use_rslora", "rank_pattern", "alpha_pattern", "init_lora_weights"}
# init_lora_weights values whose saved adapter PeftModel.from_pretrained puts on the base model
# unchanged (the saved A and B replace the initial ones; lora_ga without its gradients falls back
# to gaussian). The others change the forward: pissa / pissa_niter_N, olora and corda run their
# initialisation again on load and subtract its B A from the base weight W, loftq replaces W by
# its quantized approximation, and mica is a LoRA variant of its own.
PEFT_INIT_WITHOUT_EFFECT = (True, False, "gaussian", "orthogonal", "eva", "lora_ga")
# Fields that change the forward and that prge does not implement: accepted only at these
# (PEFT's default) values.
PEFT_REFUSED = {
    "use_dora": (False,), "modules_to_save": (None, []), "bias": ("none",), "layers_to_transform": (None,),
    "layers_pattern": (None, []), "fan_in_fan_out": (False,), "exclude_modules": (None, []),
    "megatron_config": (None,), "trainable_token_indices": (None,), "alora_invocation_tokens": (None,),
    "use_qalora": (False,), "layer_replication": (None,), "lora_bias": (False,), "target_parameters": (None, []),
    "use_bdlora": (None, False), "arrow_config": (None,), "kasa_config": (None,), "velora_config": (None,),
    "monteclora_config": (None,), "ensure_weight_tying": (False,)}


def peft_weight_name(module: str, part: str) -> str:
    """PEFT's tensor name of a LoRA `part` ("lora_A" / "lora_B") of a Hugging Face module
    (base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight)."""
    return f"{PEFT_PREFIX}{module}.{part}.weight"


def read_peft_config(adapter_dir: Path, key: str = "adapter.init_from") -> dict:
    """adapter_config.json of a PEFT LoRA adapter, checked field by field (see PEFT_*)."""
    path = adapter_dir / ADAPTER_CONFIG
    try:
        peft = json.loads(read_text(path, ADAPTER_CONFIG))
    except json.JSONDecodeError as e:
        raise ValueError(f"{key}: {path}: malformed JSON: {e}") from e
    except ValueError as e:  # not UTF-8: read_text names the line and byte
        raise ValueError(f"{key}: {e}") from None
    if not isinstance(peft, dict):
        raise ValueError(f"{key}: {path}: expected a JSON object")
    if peft.get("peft_type", "LORA") != "LORA":  # PEFT's PeftType names are upper case: "lora" is none of them
        raise ValueError(f"{key}: {path}: peft_type = {shortened(json.dumps(peft.get('peft_type')))}: prge loads LoRA adapters "
                         '(peft_type "LORA")')
    for field, value in peft.items():
        if field in PEFT_WITHOUT_EFFECT or field in PEFT_READ:
            continue
        if field not in PEFT_REFUSED:
            raise ValueError(f"{key}: {path}: field {shown_value(field)} is not supported (prge cannot tell whether it changes "
                             "the adapter's forward)")
        if value not in PEFT_REFUSED[field]:
            raise ValueError(f"{key}: {path}: {field} = {shortened(json.dumps(value))} is not supported (prge implements "
                             f"plain LoRA; accepted: {' or '.join(json.dumps(v) for v in PEFT_REFUSED[field])})")
    if "r" not in peft or "lora_alpha" not in peft or not peft.get("target_modules"):
        raise ValueError(f"{key}: {path}: needs r, lora_alpha and target_modules")
    check_peft_values(peft, f"{key}: {path}")
    return peft


def _peft_regex(pattern: str) -> re.Pattern:
    """A module pattern compiled as PEFT compiles it (Python's re), without re's FutureWarning
    on a POSIX class such as [[:digit:]] (prge names what such a pattern does instead)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return re.compile(pattern)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_rank(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_peft_values(peft: dict, where: str) -> None:
    """ValueError naming the field (and pattern key) of an adapter_config.json value that is not
    what PEFT's LoraConfig takes: r and rank_pattern values integers >= 1, lora_alpha and
    alpha_pattern values finite numbers, target_modules a regular expression or a list of names,
    patterns Python regular expressions (PEFT matches with `re`), use_rslora true or false,
    init_lora_weights one of PEFT_INIT_WITHOUT_EFFECT."""
    def fail(field: str, value, expected: str):
        raise ValueError(f"{where}: {field} = {json.dumps(value)}: expected {expected}")

    def regex(field: str, pattern: str) -> None:
        try:
            _peft_regex(pattern)
        except re.error as e:
            raise ValueError(f"{where}: {field}: {shown_value(pattern)} is not a Python regular expression, as PEFT reads "
                             f"it: {e}") from None

    if not _is_rank(peft["r"]):
        fail("r", peft["r"], "an integer rank >= 1")
    if not _is_number(peft["lora_alpha"]):
        fail("lora_alpha", peft["lora_alpha"], "a number")
    targets = peft["target_modules"]
    if isinstance(targets, str):
        if targets != "all-linear":
            regex("target_modules", targets)
    elif not isinstance(targets, list) or not all(isinstance(t, str) and t for t in targets):
        fail("target_modules", targets, "a regular expression or a list of module names")
    if peft.get("use_rslora") not in (None, True, False):
        fail("use_rslora", peft["use_rslora"], "true or false")
    for field, valid, expected in (("rank_pattern", _is_rank, "an integer rank >= 1"),
                                   ("alpha_pattern", _is_number, "a number")):
        patterns = peft.get(field)
        if patterns is None:
            continue
        if not isinstance(patterns, dict):
            fail(field, patterns, "an object of module pattern -> value")
        for pattern, value in patterns.items():
            regex(f"{field} key", pattern)
            if not valid(value):
                fail(f"{field}[{json.dumps(pattern)}]", value, expected)
    init = peft.get("init_lora_weights", True)
    if not isinstance(init, (bool, str)):
        fail("init_lora_weights", init, f"true, false or one of {', '.join(PEFT_INIT_WITHOUT_EFFECT[2:])}")
    if not (init is True or init is False or (isinstance(init, str) and init in PEFT_INIT_WITHOUT_EFFECT)):
        raise ValueError(f"{where}: init_lora_weights = {json.dumps(init)} is not supported: PeftModel recomputes "
                         "that initialisation when it loads the adapter and changes the base weights with it "
                         "(pissa, olora, corda, loftq) or is a LoRA variant (mica); convert the adapter to plain "
                         "LoRA first (PEFT: save_pretrained(..., path_initial_model_for_weight_conversion=...)) "
                         "or merge it (merge_and_unload)")


def peft_rank_and_scaling(peft: dict, module: str) -> tuple[int, float]:
    """A module's LoRA rank and scaling as PEFT computes them from adapter_config.json's values:
    the first rank_pattern / alpha_pattern key K (in order) whose `(.*\\.)?(K)$` matches the module
    name from its start (peft.utils.other.get_pattern_key, Python's re), else r / lora_alpha;
    scaling lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora."""
    def pattern_value(patterns, default):
        return next((value for pattern, value in (patterns or {}).items()
                     if _peft_regex(rf"(.*\.)?({pattern})$").match(module)), default)

    rank = pattern_value(peft.get("rank_pattern"), peft["r"])
    alpha = pattern_value(peft.get("alpha_pattern"), peft["lora_alpha"])
    return rank, alpha / math.sqrt(rank) if peft.get("use_rslora") else alpha / rank


def check_patterns_read_as_peft(model, options, where: str) -> None:
    """The config's adapter.rank / alpha / rank_pattern / alpha_pattern give every module of
    adapter.targets the rank and scaling PEFT gives it from the same values (prge matches the
    patterns with C++'s ECMAScript regular expressions, PEFT with Python's re: a pattern the two
    dialects read differently, such as a POSIX class [[:digit:]], would make an exported adapter
    load in PEFT with other scalings). Called before the adapters are attached, so that a pattern
    either dialect cannot read is named with its place. ValueError naming the pattern's module and
    both readings."""
    if not options.rank_pattern and not options.alpha_pattern:
        return
    peft = {"r": options.rank, "lora_alpha": options.alpha, "use_rslora": options.use_rslora,
            "rank_pattern": dict(options.rank_pattern), "alpha_pattern": dict(options.alpha_pattern)}
    check_peft_values({**peft, "target_modules": "all-linear"}, where)
    targets = set(options.targets)
    adapted = [module for name, module in module_names(model.spec).items() if name.rsplit(".", 1)[1] in targets]
    for module in adapted:
        try:
            mine = (options.rank_of(module), options.scaling_of(module))
        except (ValueError, RuntimeError) as e:
            raise ValueError(f"{where}: {e}") from None
        theirs = peft_rank_and_scaling(peft, module)
        if mine[0] != theirs[0] or abs(mine[1] - theirs[1]) > 1e-12 * abs(theirs[1]):
            raise ValueError(f"{where}: module {module}: rank {mine[0]}, scaling {mine[1]:g} as prge matches the "
                             f"patterns, rank {theirs[0]}, scaling {theirs[1]:g} as PEFT (Python's re) matches them; "
                             "write the patterns so that both read them alike (no POSIX classes such as [[:digit:]])")
    for field in ("rank_pattern", "alpha_pattern"):
        patterns = peft[field]
        matches = {key: [m for m in adapted if _peft_regex(rf"(.*\.)?({key})$").match(m)] for key in patterns}
        for key, modules in matches.items():
            if not modules:  # PEFT warns and goes on; here a typo would train at the default silently
                raise ValueError(f"{where}: adapter.{field} key {shown_value(key)} matches none of the adapted modules "
                                 f"(adapter.targets {sorted(targets)}, e.g. {adapted[0] if adapted else 'none'}): "
                                 "correct it or remove it")
        for module in adapted:  # PEFT takes the first key in the file's order, and its save sorts the keys
            hits = [key for key in patterns if module in matches[key]]
            if len({patterns[key] for key in hits}) > 1:
                raise ValueError(f"{where}: module {module} matches adapter.{field} keys "
                                 f"{', '.join(f'{shown_value(k)} ({patterns[k]:g})' for k in hits)}: PEFT takes the first "
                                 "key in adapter_config.json's order and its save_pretrained sorts the keys, so the "
                                 "value would change with a save; write keys that match each module once (e.g. "
                                 "'layers\\.1\\.mlp\\.up_proj' and 'layers\\.(?!1\\.)\\d+\\.mlp\\.up_proj')")


def peft_targets(peft: dict, modules: dict[str, str], projections: list[str], where: str) -> list[str]:
    """The projections a PEFT config's target_modules selects, as PEFT matches them (a string:
    a regular expression matched against the whole module name; a list: module names or name
    suffixes; 'all-linear': every projection). Only the same projections in every layer can be
    prge targets."""
    wanted = peft["target_modules"]
    names = sorted(modules.values())
    if wanted == "all-linear":
        chosen = set(names)
    elif isinstance(wanted, str):
        chosen = {n for n in names if _peft_regex(wanted).fullmatch(n)}
    else:
        chosen = {n for n in names if any(n == t or n.endswith("." + t) for t in wanted)}
    projections = sorted({n.rsplit(".", 1)[1] for n in chosen}, key=projections.index)
    layers = {re.search(r"\.layers\.(\d+)\.", n).group(1) for n in names}
    if len(chosen) != len(projections) * len(layers):
        raise ValueError(f"{where}: target_modules {json.dumps(wanted)} selects projections in some layers only; "
                         "prge adapts the same projections in every layer")
    return projections


def module_names(spec) -> dict[str, str]:
    """prge adapter name (layers.N.q_proj) -> Hugging Face module (model.layers.N.self_attn.q_proj)
    for every projection of a model's family (`spec`: its prge.ArchSpec, model.spec; the family's
    checkpoint-name table, through the core)."""
    return {f"layers.{i}.{p}": spec.hf_module_name(i, p)
            for i in range(spec.num_hidden_layers) for p in spec.projections}


def load_run(run_dir: str | Path, dtype: str | None = None, config=None):
    """(config, model directory, model) of a finished run: the base with the run's trained
    adapters, or, for a run that trained full weights (estimator.kind mezo), with its trained
    weights; `dtype`: the base loaded in this dtype instead of the run's model.dtype (the trained
    tensors are cast to it); `config`: finished_run_config's, when the caller has read it.
    FileNotFoundError without config.yaml, or for a run that has not finished (no
    trained.safetensors); ValueError when the
    model directory holds another model than the run trained on (prge.model_identity)."""
    from prge._core import Trainer
    from prge.models import config_model_dir
    from prge.setup import setup_model

    run_dir = Path(run_dir)
    config = config or finished_run_config(run_dir)
    if dtype is not None and dtype != config.model.dtype:  # the base loaded in another dtype (--merge)
        from prge._core import parse_run_config

        config = parse_run_config((run_dir / "config.yaml").read_text(), str(run_dir / "config.yaml"),
                                  [("model.dtype", dtype)])
    model_dir = config_model_dir(config)
    if (run_dir / "summary.json").is_file():  # the trained weights belong to the model the run trained on
        check_same_model(run_summary.read(run_dir / "summary.json").get("model_fingerprint"), model_dir,
                         str(run_dir / "summary.json"), adapter_dir=starting_adapter(config))
    model = setup_model(config, model_dir=model_dir, device="cpu")  # the run's model, adapters and start
    Trainer(model, config.estimator, config.optimizer, config.run.seed).load_checkpoint(
        str(run_dir / "trained.safetensors"))
    return config, model_dir, model


def finished_run_config(run_dir: Path):
    """The RunConfig of a finished run's config.yaml. FileNotFoundError without config.yaml, or for
    a run that has not finished (no trained.safetensors)."""
    from prge._core import load_run_config

    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: {'not a directory' if run_dir.exists() else 'not found'} (a run "
                                "directory of `prge train`, holding config.yaml and trained.safetensors)")
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir}: no config.yaml (a run directory of `prge train` holds it and "
                                "trained.safetensors)")
    config = load_run_config(str(run_dir / "config.yaml"))
    if not (run_dir / "trained.safetensors").is_file():
        resume = ""
        if any(run_dir.glob("checkpoint*")):
            resume = f": it has a checkpoint; finish it with `prge train {run_dir / 'config.yaml'} --resume`"
            if Path(config.run.output_dir).resolve() != run_dir.resolve():  # the run's paths are relative
                resume += (f" from the directory it was started in (its run.output_dir, {config.run.output_dir}, "
                           "is relative to it)")
        raise FileNotFoundError(f"{run_dir}: the run there has not finished (no trained.safetensors){resume}")
    return config


# Files that make up a set of weights (a model, shards and their index, an adapter) in a Hugging
# Face directory: an export with --overwrite removes every one it does not write, so that the
# directory holds exactly one set (transformers and prge would otherwise load different ones).
WEIGHT_FILES = re.compile(r"^(.*\.safetensors|.*\.safetensors\.index\.json|pytorch_model.*\.bin|.*\.bin\.index\.json|"
                          r"adapter_config\.json|adapter_model\..*|.*\.gguf|tf_model\.h5|flax_model\.msgpack)$")


def check_finite(path: Path, tensors: dict, key: str) -> None:
    """ValueError naming the file and the first tensor holding a NaN or inf."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(f"{key}: {path}: tensor {name} holds {bad} non-finite value(s) (NaN or inf); "
                             "the file is damaged or was saved by a diverged run")


def _output_dir(run_dir: str | Path, out: str | Path, overwrite: bool, config) -> Path:
    """The export's directory, checked before anything is loaded or written: not the run's
    directory, not its model's directory (that of `config`, the run's) nor inside it, new or
    empty unless `overwrite`; with `overwrite`, every other set of weights there is removed
    (WEIGHT_FILES)."""
    from prge.models import config_model_dir
    from prge.run_dir import RunDirError, check_output_dir

    run_dir, out = Path(run_dir), Path(out)
    if out.resolve() == run_dir.resolve():
        raise RunDirError(f"--out: {out} is the run directory it exports from; write somewhere else")
    check_output_dir(out, "--out", overwrite, {"the run's model directory": config_model_dir(config)})
    existing = next(p for p in [out, *out.absolute().parents] if p.exists())
    if not existing.is_dir():
        raise RunDirError(f"--out: {out}: {existing} is a file, so the directory cannot be made there")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunDirError(f"--out: {out}: {existing} is not writable by this user")
    return out


def _replace_weights(out: Path, writes: tuple[str, ...]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for path in out.iterdir():
        if path.is_file() and WEIGHT_FILES.match(path.name) and path.name not in writes:
            path.unlink()


def _save_tensors(tensors: dict, path: Path, metadata: dict | None = None) -> None:
    """safetensors written whole or not at all (a temporary name, fsync, rename)."""

    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file(tensors, str(tmp), metadata={"format": "pt", **(metadata or {})})
        durable.usual_mode(tmp)
        durable.fsync_file(tmp)
        tmp.replace(path)
    except OSError as e:
        raise OSError(f"{path}: cannot write ({e.strerror or e})") from e


def export_peft(run_dir: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """The run's adapters as a PEFT LoRA adapter in `out` (see the module's text)."""
    run_config = finished_run_config(Path(run_dir))
    if not run_config.use_adapter:
        raise ValueError(f"{run_dir}: the run trained full weights (MeZO), not adapters: there is no PEFT adapter "
                         "to write; --merge writes its trained model as a Hugging Face model directory")
    out = _output_dir(run_dir, out, overwrite, run_config)
    config, model_dir, model = load_run(run_dir, config=run_config)  # a non-finite trained tensor is named here
    modules = module_names(model.spec)
    tensors = {}
    for a in model.adapters():
        tensors[peft_weight_name(modules[a["name"]], "lora_A")] = a["lora_a"].detach().float().contiguous()
        tensors[peft_weight_name(modules[a["name"]], "lora_B")] = a["lora_b"].detach().float().contiguous()
    _replace_weights(out, (ADAPTER_WEIGHTS, ADAPTER_CONFIG))
    _save_tensors(tensors, out / ADAPTER_WEIGHTS, base_weights_metadata(config, model))
    adapter = config.adapter
    durable.write_text(out / ADAPTER_CONFIG, json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": str(model_dir),
        "r": adapter.rank, "lora_alpha": adapter.alpha,
        "target_modules": peft_target_modules(model),
        "use_rslora": adapter.use_rslora, "rank_pattern": adapter.rank_pattern,
        "alpha_pattern": adapter.alpha_pattern,
        "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
        "init_lora_weights": True, "use_dora": False, "modules_to_save": None,
    }, indent=2))
    return out


def peft_target_modules(model) -> list[str] | str:
    """adapter_config.json's target_modules for the model's adapted projections: their names in
    the family's table (PEFT matches a name as a module-name suffix); for a multimodal wrapper
    (gemma3), a regular expression PEFT matches against the whole module name, so that the vision
    tower's projections of the same names get no LoRA layers."""
    adapted = sorted({a["name"].rsplit(".", 1)[1] for a in model.adapters()})
    if not model.spec.multimodal_wrapper:
        return adapted
    # model.language_model.layers.0.self_attn.q_proj -> model\.language_model\.layers\.\d+\.self_attn\.q_proj
    modules = (re.escape(model.hf_module_name(0, p)).replace(r"layers\.0\.", r"layers\.\d+\.", 1) for p in adapted)
    return "(" + "|".join(modules) + ")"


def base_weights_metadata(config, model) -> dict:
    """How the run's base held its frozen weights, for the adapter file's metadata (the adapter
    itself is the same PEFT LoRA adapter whatever the base's format)."""
    if not model.quantized:
        stored = "dense"
    elif config.model.quantize == "none":  # kept as the checkpoint stores it
        stored = "quantized as stored (GGUF blocks)"
    else:  # the group size quantizing at load used (int4 unset: 64)
        group = config.model.effective_group_size
        stored = f"{config.model.quantize}, " + (f"group_size {group}" if group else "one scale per output channel")
    return {"prge.base_model": config.model.name, "prge.base_weights": stored}


STORED_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}  # safetensors' names -> model.dtype's
DTYPE_WIDTH = {"float32": 2, "bfloat16": 1, "float16": 1}  # float32 holds both half formats' values


def stored_dtype(model_dir: str | Path) -> str | None:
    """The dtype (a model.dtype name) of most floating-point tensors of a model directory's
    checkpoint, from the safetensors headers alone; None where none is float32, bfloat16 or
    float16."""
    from collections import Counter

    from safetensors import safe_open

    from prge._core import weight_files

    counts = Counter()
    for file in weight_files(str(model_dir)):
        with safe_open(file, "pt") as f:
            counts.update(STORED_DTYPES.get(f.get_slice(name).get_dtype()) for name in f.keys())
    counts.pop(None, None)
    return counts.most_common(1)[0][0] if counts else None


def export_merged(run_dir: str | Path, out: str | Path, overwrite: bool = False, log=print) -> Path:
    """A full Hugging Face model directory `out` with (alpha / r) B A folded into W, or, for a
    run that trained full weights (MeZO), its trained weights: exactly one set of weights
    (model.safetensors), never written into the model directory it reads. The adapters fold
    into W in the wider of the run's model.dtype and the dtype the base checkpoint stores
    (float64 sums, then that dtype): a bfloat16 run on a float32 checkpoint, and a float32 run on
    a bfloat16 one, merge into float32 weights, where bfloat16 would round away most of a small
    (alpha / r) B A. A MeZO run's weights are written in its model.dtype."""
    from prge._core import wrapper_text_weight_name

    run_config = finished_run_config(Path(run_dir))  # an unfinished run is named before the base is read
    out = _output_dir(run_dir, out, overwrite, run_config)
    dtype = None
    if run_config.use_adapter:
        from prge.models import config_model_dir

        stored = stored_dtype(config_model_dir(run_config)) or run_config.model.dtype
        # the wider of the two: a float32 run on a bfloat16 checkpoint merges into float32 too
        dtype = stored if DTYPE_WIDTH[stored] > DTYPE_WIDTH[run_config.model.dtype] else run_config.model.dtype
        if dtype != run_config.model.dtype:
            log(f"[prge] note: the run trained in {run_config.model.dtype}; its base checkpoint stores {dtype}, so "
                f"the adapters are folded into {dtype} weights (in {run_config.model.dtype} most of a small "
                "(alpha / r) B A would round away)")
    config, model_dir, model = load_run(run_dir, dtype, run_config)  # a non-finite trained tensor is named here
    if model.quantized:
        held = base_weights_metadata(config, model)["prge.base_weights"]
        log(f"[prge] note: the base keeps its projection weights quantized ({held}); the merged model holds them "
            "dequantized, with (alpha / r) B A folded in: a dense model")
    modules = module_names(model.spec)
    low_rank = {}
    # A as the run used it: drawn (or read from adapter.init_from) in float32, then held in the
    # run's dtype; so in a base loaded otherwise, A is rounded to the run's dtype as it was.
    trained_a = getattr(torch, run_config.model.dtype) if run_config is not None else None
    for a in model.adapters():  # under full_parameters' (text-model) names: a wrapper's mapped
        lora_a = a["lora_a"] if trained_a is None else a["lora_a"].to(trained_a)
        delta = a["scaling"] * (a["lora_b"].double() @ lora_a.double())
        low_rank[wrapper_text_weight_name(modules[a["name"]] + ".weight")] = delta
    tensors = {}
    for name, weight in model.full_parameters():
        merged = weight.double() + low_rank.pop(name) if name in low_rank else weight
        tensors[name] = merged.to(weight.dtype).contiguous()
    if low_rank:  # a name the two tables spell differently: nothing may go unmerged silently
        raise RuntimeError(f"--merge: no weight {sorted(low_rank)[0]} to fold the adapter into")
    if model.spec.multimodal_wrapper:
        tensors = wrapper_checkpoint(Path(model_dir), tensors)
    check_finite(out / "model.safetensors", tensors, "--merge")
    _replace_weights(out, ("model.safetensors",))
    _save_tensors(tensors, out / "model.safetensors")
    hf_config = json.loads((Path(model_dir) / "config.json").read_text())
    hf_config["torch_dtype"] = hf_config["dtype"] = config.model.dtype
    durable.write_text(out / "config.json", json.dumps(hf_config, indent=2))
    # contents only: each copy is a new file with the mode the umask gives, as the weights are
    # (a read-only model store's 0444 would make the export read-only)
    for name in TOKENIZER_FILES + PROCESSOR_FILES:
        if (Path(model_dir) / name).is_file():
            durable.copy_contents(Path(model_dir) / name, out / name)
    templates = Path(model_dir) / CHAT_TEMPLATES_DIR  # named chat templates, as save_pretrained writes them
    if templates.is_dir():
        shutil.copytree(templates, out / CHAT_TEMPLATES_DIR, dirs_exist_ok=True, copy_function=durable.copy_contents)
    return out


def wrapper_checkpoint(model_dir: Path, text: dict) -> dict:
    """A multimodal wrapper's (gemma3) whole checkpoint with its text weights replaced by `text`
    (text-model names, as full_parameters gives them): every tensor of the model directory's
    checkpoint under its own name, so that the vision tower and projector stay and transformers
    loads the merged model with the wrapper's config.json. The core reads the same files and
    maps the same names (weight_files, wrapper_text_weight_name). ValueError naming a text
    weight the checkpoint lacks."""
    from prge._core import weight_files, wrapper_text_weight_name

    out, left = {}, dict(text)
    dtype = next(iter(text.values())).dtype
    for file in weight_files(str(model_dir)):
        for name, tensor in load_file(file).items():
            mapped = wrapper_text_weight_name(name)
            if mapped in left:
                out[name] = left.pop(mapped)
            else:  # the vision tower and projector, converted to the export's dtype as the text is
                out[name] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    if left:
        raise ValueError(f"--merge: {model_dir}: the checkpoint has no tensor for {sorted(left)[0]} "
                         f"({len(left)} text weight(s) in all)")
    return out


def read_peft_adapter(adapter_dir: str | Path, place: str | None = None) -> dict:
    """read_peft_config of the adapter in `adapter_dir` (adapter.init_from, set at `place`: the
    config's file:line:column, named in every message), after checking that it is a directory
    holding a PEFT adapter's two files (FileNotFoundError naming a missing path, a file, or the
    file that is missing; PermissionError naming the directory or file that cannot be read)."""
    adapter_dir, where = Path(adapter_dir), place or "adapter.init_from"
    relative = "" if adapter_dir.is_absolute() else f" (relative to the working directory {Path.cwd()})"
    try:
        if not adapter_dir.exists():
            raise FileNotFoundError(f"{where}: {adapter_dir} not found{relative}; expected a PEFT adapter's directory")
        if not adapter_dir.is_dir():
            raise FileNotFoundError(f"{where}: {adapter_dir} is a file; expected a PEFT adapter's directory "
                                    f"({ADAPTER_CONFIG} + {ADAPTER_WEIGHTS})")
        missing = [name for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS) if not (adapter_dir / name).is_file()]
    except PermissionError as e:
        raise PermissionError(f"{where}: {adapter_dir}: cannot be read ({e.strerror})") from None
    if missing:
        raise FileNotFoundError(f"{where}: {adapter_dir} has no {' or '.join(missing)} as a file "
                                f"(a PEFT adapter holds {ADAPTER_CONFIG} + {ADAPTER_WEIGHTS})")
    try:
        return read_peft_config(adapter_dir, where)
    except PermissionError as e:
        raise PermissionError(f"{where}: {adapter_dir / ADAPTER_CONFIG}: cannot be read ({e.strerror})") from None


def check_peft_adapter(adapter_dir: str | Path, spec, options, place: str | None = None) -> tuple[dict, dict]:
    """The PEFT LoRA adapter in `adapter_dir` against a model of `spec` (prge.ArchSpec) with
    adapters attached by `options` (config.adapter): its adapter_config.json's modules, ranks and
    scalings (r, lora_alpha, target_modules, use_rslora, rank_pattern, alpha_pattern, as PEFT
    computes them) must be the options', and its adapter_model.safetensors must hold exactly the
    adapted modules' lora_A / lora_B (read_peft_weights). Needs config.json alone (no base
    weights): `prge check` runs it as load_peft does, so both refuse the same adapters in the same
    words. Returns (the adapter's config, its tensors); raises FileNotFoundError when the directory
    holds no adapter, PermissionError when it cannot be read, ValueError naming the field, module
    or tensor that differs. `place`: where the config set adapter.init_from (file:line:column and
    key), for the message."""
    adapter_dir = Path(adapter_dir)
    peft = read_peft_adapter(adapter_dir, place)
    modules = module_names(spec)
    where = f"{place or 'adapter.init_from'}: {adapter_dir / ADAPTER_CONFIG}"
    targets = peft_targets(peft, modules, list(spec.projections), where)
    adapted = set(spec.adapter_targets(list(options.targets)))
    if set(targets) != adapted:
        raise ValueError(f"{where}: target_modules select {targets}, the config's adapter.targets "
                         f"{list(options.targets)} adapt {sorted(adapted)}: set adapter.targets to match")
    ranks = {}
    for name, module in sorted(modules.items()):
        if name.rsplit(".", 1)[1] not in targets:
            continue
        for what, peft_value in zip(("rank_of", "scaling_of"), peft_rank_and_scaling(peft, module)):
            try:
                mine = getattr(options, what)(module)
            except (ValueError, RuntimeError) as e:
                raise ValueError(f"adapter: {e}") from None
            if abs(mine - peft_value) > 1e-12 * abs(peft_value):
                setting = {k: peft.get(k) for k in ("r", "lora_alpha", "use_rslora", "rank_pattern", "alpha_pattern")
                           if peft.get(k) not in (None, {}, False)}
                raise ValueError(f"{where}: module {module} has {what.split('_')[0]} {peft_value:g} there, "
                                 f"{mine:g} under the config's adapter section: set adapter.rank / alpha / "
                                 f"use_rslora / rank_pattern / alpha_pattern as the adapter has them "
                                 f"({json.dumps(setting)})")
            if what == "rank_of":
                ranks[module] = int(peft_value)
    return peft, read_peft_weights(adapter_dir, spec, ranks, place)


def read_peft_weights(adapter_dir: Path, spec, ranks: dict, place: str | None = None) -> dict:
    """adapter_model.safetensors's tensors, checked against the adapted modules (`ranks`: Hugging
    Face module name -> its rank) of a model of `spec`: readable (a truncated or damaged file is
    named), for each module a floating-point lora_A.weight of shape [rank, in_features] and
    lora_B.weight of [out_features, rank] (spec.projection_shape), finite, and no tensor besides
    them (PeftModel would apply a LoRA on lm_head or embed_tokens, which prge does not train).
    A LoRA's A and B are small (rank x the projections), so `prge check` reads them as train
    does. ValueError naming the file and the tensor."""
    from safetensors.torch import load as load_bytes

    path, where = Path(adapter_dir) / ADAPTER_WEIGHTS, place or "adapter.init_from"
    try:
        tensors = load_bytes(path.read_bytes())
    except OSError as e:
        raise ValueError(f"{where}: {path}: cannot be read ({e.strerror or e})") from None
    except SafetensorError as e:  # a truncated or damaged file
        raise ValueError(f"{where}: {path}: not a readable safetensors file ({e})") from None
    wanted = {}
    for module, rank in ranks.items():
        out_features, in_features = spec.projection_shape(module.rsplit(".", 1)[1])
        wanted[peft_weight_name(module, "lora_A")] = (rank, in_features)
        wanted[peft_weight_name(module, "lora_B")] = (out_features, rank)
    unused = sorted(set(tensors) - set(wanted))
    if unused:
        adapted = sorted({m.rsplit(".", 1)[1] for m in ranks}, key=list(spec.projections).index)
        raise ValueError(f"{where}: {path} holds {len(unused)} tensor(s) besides the LoRA of the adapted "
                         f"projections ({', '.join(unused[:3])}{', ...' if len(unused) > 3 else ''}); this "
                         f"run adapts {', '.join(adapted)} (adapter.targets; prge can adapt "
                         f"{', '.join(spec.projections)})")
    for name, shape in wanted.items():
        if name not in tensors:
            raise ValueError(f"{where}: {path} has no tensor {name}")
        tensor = tensors[name]
        if not tensor.is_floating_point():
            raise ValueError(f"{where}: {path}: tensor {name} holds {str(tensor.dtype).removeprefix('torch.')} "
                             "values; a LoRA weight is floating point")
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{where}: {path}: tensor {name} has shape {tuple(tensor.shape)}, the model "
                             f"and adapter_config.json expect {shape}")
    check_finite(path, tensors, where)
    return tensors


def load_peft(model, adapter_dir: str | Path, options, place: str | None = None) -> None:
    """Copy a PEFT LoRA adapter's A and B into a model whose adapters were attached with
    `options`, after check_peft_adapter (its FileNotFoundError / ValueError: the adapter's
    config, and its tensors' names, shapes, dtypes and values)."""
    _, tensors = check_peft_adapter(adapter_dir, model.spec, options, place)
    modules = module_names(model.spec)
    wanted = {peft_weight_name(modules[a["name"]], part): (a, slot)
              for a in model.adapters() for part, slot in (("lora_A", "lora_a"), ("lora_B", "lora_b"))}
    with torch.no_grad():
        for name, (a, slot) in wanted.items():
            if tensors[name].shape != a[slot].shape:  # the spec's shapes are the model's: a bug if not
                raise RuntimeError(f"{name}: shape {tuple(tensors[name].shape)} passed the adapter check, "
                                   f"the model holds {tuple(a[slot].shape)}")
            a[slot].copy_(tensors[name].to(a[slot].dtype))

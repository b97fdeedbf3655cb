"""Settings that cannot be judged from the config alone, checked against this machine, the
model and the first step, so that a run never trains silently on nothing:

    check_names(config)             data.task, model.name and model.device name things that exist here
    check_model_config(config)      the model's config.json read as the loader reads it, and the
                                    adapters against it (prge check)
    check_mezo_weight_format(config) full-parameter MeZO on projections quantized at load (refused)
    check_device(device)            model.device names a device this torch has
    check_positions(config, model)  data.max_length fits the model's max_position_embeddings
    check_losses_differ(step, r, c) the ± perturbations of estimator.epsilon move the loss at all
    learning_rate_note(config)      full-parameter MeZO at an adapter-sized optimizer.lr (a note)
    weight_format_note(config, d)   how loading turns the checkpoint's own quantized blocks (a note)
    custom_code_note(d, type)       config.json's auto_map names code prge does not run (a note)
    notes(config)                   every note above that the config and its model call for (prge check)

(Settings the config alone decides, such as optimizer.accumulate > run.steps, are errors of
the config reader, csrc/prge/config.cpp.)"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from prge.whitespace import shown_value, visible


def check_names(config, task: bool = True, model: bool = True, data: bool = True) -> None:
    """Before anything is loaded: data.task is a built-in task (or custom), model.name a model
    directory, a .gguf file or a registered model with its packages installed, and model.device
    a device this torch has (task / model False: those two not checked, e.g. for a speed run of
    random weights), and the task's data files are there (check_data_paths; data False: not, for
    a sweep's run finished already). ValueError / FileNotFoundError naming the config file, line and key (the key
    alone when the config left it at its default). Shared by check, train, export and sweeps."""
    from prge.data.tasks import get_task
    from prge.models import check_model_name

    places = config.places
    if task and config.data.task != "custom":
        try:
            get_task(config.data.task)
        except ValueError as e:
            raise ValueError(f"{places.get('data.task', 'data.task')}: {e}") from None
    if task and data:
        check_data_paths(config)
    if model:
        check_model_name(config.model.name, places.get("model.name", "model.name"))
    check_device(config.model.device, "model.device", places.get("model.device"))


def check_data_paths(config) -> None:
    """A custom task's template and label_words (custom_task) and its files, and a built-in task's
    data.data_dir, exist: FileNotFoundError / ValueError naming the config's file, line and key, so
    that `prge check` and a sweep's preflight find them before anything trains."""
    from prge.data.custom import SPLIT_KEYS, custom_task, split_paths
    from prge.data.sources import is_hf_spec

    places, data = config.places, config.data
    if data.task == "custom":
        custom_task(data)
        for split, path in split_paths(data).items():
            key = f"data.{SPLIT_KEYS[split]}"
            if not path.exists():
                raise FileNotFoundError(f"{places.get(key, key)}: {visible(str(path))} not found")
    elif data.data_dir and not is_hf_spec(data.data_dir) and not Path(data.data_dir).exists():
        raise FileNotFoundError(f"{places.get('data.data_dir', 'data.data_dir')}: {visible(data.data_dir)} not found")


def check_model_config(config) -> None:
    """The model's config.json read as the model loader reads it (read_model_config: an
    unsupported model_type, RoPE type or key is a RuntimeError naming the file and key), and
    data.max_length against its max_position_embeddings (check_positions, ValueError), and the
    files its weights would be read from (weight_files: a missing shard, an unreadable index or
    no model.safetensors is a RuntimeError naming them). Reads no weights: a model directory, or
    a registered model / .gguf file already converted into the cache; one not converted yet is
    read when it is."""
    from prge.models import model_dir_without_converting

    check_mezo_weight_format(config)
    model_dir = model_dir_without_converting(config.model.name)
    spec = None if model_dir is None else read_model_config(config, model_dir)
    if spec is not None:
        check_positions(config, SimpleNamespace(spec=spec), model_dir)
        check_group_size(config, spec, model_dir)
    check_adapters(config, spec)


def check_adapters(config, spec) -> None:
    """adapter.targets against the model's family (`spec`: its prge.ArchSpec), and the PEFT
    adapter adapter.init_from starts from against both (check_peft_adapter: its files, fields,
    modules, ranks and scalings), as setup_model finds them, reading no tensor. Without a spec
    (a model not converted yet) only the adapter's own files are checked. ValueError /
    FileNotFoundError naming the key's place."""
    from prge.adapters import check_peft_adapter, read_peft_adapter

    if not config.use_adapter:
        return
    if spec is not None:
        try:
            spec.adapter_targets(list(config.adapter.targets))
        except ValueError as e:  # worded as setup_model words it
            raise ValueError(f"{config.places.get('adapter.targets') or 'adapter.targets'}: {e}") from None
    adapter_dir = config.adapter.init_from
    if not adapter_dir:
        return
    place = config.places.get("adapter.init_from")
    if spec is None:
        read_peft_adapter(adapter_dir, place)
    else:
        check_peft_adapter(adapter_dir, spec, config.adapter, place)


def check_mezo_weight_format(config) -> None:
    """ValueError naming model.quantize for full-parameter MeZO on projections quantized at load
    (int8 / int4): the trainer refuses it (there is no dense weight to perturb); prge check and a
    sweep's preflight say so before anything runs."""
    if config.estimator.kind == "mezo" and config.load_quantize in ("int8", "int4"):
        place = config.places.get("model.quantize", "model.quantize")
        raise ValueError(f"{place}: {config.load_quantize} with estimator.kind: mezo: MeZO perturbs and updates every "
                         "weight, and quantized projections have no dense weight to perturb; train LoRA-FA adapters "
                         "(estimator.kind: prge or fzoo) on the quantized base, or load it dense (none or dense)")


def check_group_size(config, spec, model_dir: str | Path) -> None:
    """ValueError naming model.group_size when quantizing at load (int8 / int4) would split a
    projection's input columns unevenly, as loading would find (prge check reads no weights)."""
    group = config.model.effective_group_size
    if config.load_quantize not in ("int8", "int4") or group <= 0:
        return
    widths = {"q/k/v and gate/up projections (hidden_size)": spec.hidden_size,
              "o_proj (num_attention_heads x head_dim)": spec.num_attention_heads * spec.head_dim,
              "down_proj (intermediate_size)": spec.intermediate_size}
    for what, columns in widths.items():
        if columns % group:
            place = config.places.get("model.group_size") or config.places.get("model.quantize") or "model.group_size"
            raise ValueError(f"{place}: group size {group} does not divide the {columns} input columns of the "
                             f"{what} in {Path(model_dir) / 'config.json'}; choose a divisor of {columns}")


def read_model_config(config, model_dir: str | Path):
    """prge.ArchSpec of model_dir/config.json, as the model loader reads it, after checking that
    the loader finds the directory's weight files (weight_files) and may open each (no weights
    read); its RuntimeError (naming the file and key) after where model.name was set, when the
    config set it."""
    from prge._core import ArchSpec, weight_files

    try:
        spec = ArchSpec.from_json_file(str(Path(model_dir) / "config.json"))
        for path in weight_files(str(model_dir)):
            try:
                open(path, "rb").close()
            except OSError as e:
                raise RuntimeError(f"{path}: cannot be read ({e.strerror or e})") from None
        return spec
    except RuntimeError as e:
        place = config.places.get("model.name")
        raise RuntimeError(f"{place}: {e}" if place else str(e)) from None


def check_device(device: str, key: str = "model.device", where: str | None = None) -> None:
    """ValueError naming the key (after `where`, e.g. "run.yaml:3:11: model.device", when
    given) when `device` is neither cpu nor cuda (mps, xpu, meta: never tested, so refused) or a
    CUDA device this torch cannot use."""
    at = where or key
    if device.partition(":")[0] not in ("cpu", "cuda"):
        raise ValueError(f"{at}: {shown_value(device)}: prge runs on cpu and cuda devices (cuda, cuda:N)")
    if not device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        why = ("this torch is built without CUDA" if torch.version.cuda is None
               else "no CUDA GPU is visible (driver, CUDA_VISIBLE_DEVICES)")
        raise ValueError(f"{at}: {device}: {why} (torch {torch.__version__}); use {key}: cpu")
    index = device.partition(":")[2]
    if index and int(index) >= torch.cuda.device_count():
        raise ValueError(f"{at}: {device}: torch sees {torch.cuda.device_count()} CUDA device(s), "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")


def check_positions(config, model, model_dir: str | Path) -> None:
    """data.max_length beyond the model's max_position_embeddings trains and scores positions
    the model never saw (RoPE past its range): an error naming both."""
    limit = int(model.spec.max_position_embeddings)
    if limit > 0 and config.data.max_length > limit:
        at = config.places.get("data.max_length", "data.max_length")
        raise ValueError(f"{at}: {config.data.max_length} exceeds the model's max_position_embeddings "
                         f"{limit} ({Path(model_dir) / 'config.json'}); set data.max_length <= {limit}")


def check_losses_differ(step: int, result, config) -> None:
    """At a run's first step: when every loss of the step (each query's +ε and −ε points, or θ
    and θ+εz) is bit-identical, estimator.epsilon moves nothing in model.dtype and every
    projected gradient is 0: the run would train nothing. An error naming the key and step."""
    if config.estimator.kind == "first_order":
        return
    losses = list(result.losses)
    if len(losses) < 2 or any(loss != losses[0] for loss in losses[1:]):
        return
    raise epsilon_too_small(config, step, f"all {len(losses)} perturbed losses are bit-identical ({losses[0]!r}): "
                                          "every projected gradient is 0")


def epsilon_too_small(config, step: int, seen: str) -> ValueError:
    """The error for a step whose perturbations moved no loss (`seen`: what showed it)."""
    return ValueError(
        f"estimator.epsilon: {config.estimator.epsilon:g} is too small for model.dtype {config.model.dtype}: at step "
        f"{step} {seen}, so training would change nothing; raise estimator.epsilon (1e-3 to 1e-2 is usual)")


# Full-parameter MeZO's learning rates: its paper's grid for OPT is 1e-7 / 1e-6 and reaches 1e-5
# for RoBERTa (Malladi et al., 2023); this repository's MeZO sweeps use 1e-6 to 1e-5. Above: a note.
MEZO_LR_NOTE_ABOVE = 1e-5


def weight_format_note(config, model_dir: str | Path) -> str | None:
    """A note where the weight format loading uses (RunConfig.load_quantize) is not how the
    checkpoint keeps its projections: full-parameter MeZO loads a checkpoint's own quantized blocks
    (a GGUF's, kept as shipped) dense, and int8 / int4 quantize their dequantized copy again."""
    from prge._core import QUANTIZED_WEIGHTS_FILE

    model_dir = Path(model_dir)
    if not (model_dir / QUANTIZED_WEIGHTS_FILE).exists():
        return None
    quantize = config.load_quantize
    if quantize != config.model.quantize:
        return (f"[prge] note: estimator.kind: mezo perturbs every weight, so {model_dir.name}'s quantized projection "
                "weights are loaded dequantized (as model.quantize: dense)")
    if quantize in ("int8", "int4"):
        return (f"[prge] note: model.quantize: {quantize} quantizes {model_dir.name}'s dequantized copy again at load "
                "(round to nearest); model.quantize: none keeps its own quantized blocks as shipped")
    return None


def custom_code_note(model_dir: str | Path, model_type: str) -> str | None:
    """A note when config.json's auto_map names modeling code shipped with the model: prge runs
    its own implementation of the model_type, the class transformers loads for a model_type it
    has unless trust_remote_code=True (the core accepts the key for a supported model_type)."""
    import json

    config_json = Path(model_dir) / "config.json"
    try:
        has_auto_map = "auto_map" in json.loads(config_json.read_text())
    except (OSError, ValueError):  # the core has read it already; nothing to note
        return None
    if not has_auto_map:
        return None
    return (f"[prge] note: {config_json}: auto_map names modeling code shipped with the model; prge runs its "
            f"native {model_type}, the class transformers loads without trust_remote_code=True")


def notes(config) -> list[str]:
    """The notes `prge train` would print for this config before its first step, as far as the
    config and the model's files decide them (no weights read): learning_rate_note, and for a model
    directory (or a registered model / .gguf file already converted) weight_format_note and
    custom_code_note. Those that need the loaded model (model.fold_lora_a folding nothing) are
    left to training."""
    from prge._core import ArchSpec
    from prge.models import model_dir_without_converting

    found = [learning_rate_note(config)]
    model_dir = model_dir_without_converting(config.model.name)
    if model_dir is not None:
        found.append(weight_format_note(config, model_dir))
        try:
            model_type = ArchSpec.from_json_file(str(Path(model_dir) / "config.json")).model_type
        except RuntimeError:  # check_model_config names it
            model_type = None
        if model_type is not None:
            found.append(custom_code_note(model_dir, model_type))
    return [note for note in found if note]


def learning_rate_note(config) -> str | None:
    """A note (not an error: the user may mean it) when estimator.kind mezo, which updates every
    weight of the model each step, runs at a learning rate like LoRA-FA's (1e-4 to 1e-3).
    Measured (experiments/results/NOTES.md, session 12): SmolLM2-135M on Fine Food, MeZO with
    SGD at the quickstart's lr 1e-3, mean training loss 17.9 at steps 1-2 and 2179 at steps 13-14."""
    lr = config.optimizer.lr
    if config.estimator.kind != "mezo" or lr <= MEZO_LR_NOTE_ABOVE:
        return None
    return (f"[prge] note: optimizer.lr: {lr:g} with estimator.kind: mezo: full-parameter MeZO updates every weight "
            f"of the model each step (SGD: by lr * g * z), and at learning rates like LoRA-FA's its loss diverges "
            f"(SmolLM2-135M at lr 1e-3: 17.9 -> 2179 in 14 steps); MeZO's full-parameter runs use lr 1e-7 to 1e-5")

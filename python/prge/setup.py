"""One setup of a run's data and model, shared by every entry point so that they cannot drift:
`prge train` (train.py, also under torchrun and in sweeps), `prge export` and `prge train
--runtime` (export/), `prge generate` (its tokenizer, chat rendering and stop ids) and speed
sweeps (speed.py).

    data = setup_data(config)           task, the model's tokenizer (transformers), encoder,
                                        encoded train / dev / eval splits of the protocol
    model = setup_model(config, data)   weights on the device in the dtype, LoRA-FA adapters
                                        attached (config.adapter) and started from
                                        adapter.init_from when set; token ids checked against
                                        the model's vocabulary

Bad input raises ValueError / FileNotFoundError naming the key, file or record (the CLI prints
them as `prge: error: ...`)."""
from __future__ import annotations

import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

from prge.data.batching import EncodedExample, PromptEncoder
from prge.data.examples import MissingSplit, Task
from prge.data.kinds import CLASSIFICATION
from prge.data.tasks import task_for
from prge.data.tokens import ModelTokenizer
from prge.models import config_model_dir
from prge.whitespace import shown_value


@dataclass
class DataSetup:
    """A run's data as every entry point sees it."""
    task: Task
    model_dir: Path
    tokenizer: ModelTokenizer
    encoder: PromptEncoder
    train: list[EncodedExample] = field(default_factory=list)
    dev: list[EncodedExample] = field(default_factory=list)
    eval: list[EncodedExample] = field(default_factory=list)


def select_examples(examples: list, n: int, seed: int, shuffle: bool) -> list:
    """Paper protocol: the first n examples after a seeded shuffle (train), or the first n."""
    if shuffle:
        examples = examples[:]
        random.Random(seed).shuffle(examples)
    return examples[:n]


def split_protocol(task, data, seed: int) -> tuple[list, list, list]:
    """(train, dev, test) examples of a protocol; dev is empty under the paper protocol.

    paper: first train_examples of the seeded-shuffled train split; the first
           eval_examples of the validation split (a warning when they lack a class the split
           has: warn_missing_classes).
    mezo:  train_examples then dev_examples of the seeded-shuffled train split;
           eval_examples of the seeded-shuffled validation split as the test set.
    data.train_from: validation (for data published without a training split: BoolQ,
           WinoGrande, QNLI here): the validation split, shuffled by the seed, gives train (and
           dev) first, and the test set is the first eval_examples of the rest: disjoint.

    Raises MissingSplit (FileNotFoundError) naming the task, the missing split and
    data.train_from when the data has no training split and train_from is not validation;
    ValueError when the validation split is too small to leave examples to evaluate."""
    data_dir = data.data_dir or None
    if getattr(data, "train_from", "train") == "validation":  # absent from extensions built before the key
        train, dev, evaluation = _split_validation(task, data, seed, data_dir)
        if task.name == "custom":  # disjoint records; a record written twice in the file may still be in both
            note_shared_examples(task, train + dev, evaluation)
        return train, dev, evaluation
    try:
        train_all = task.load("train", data_dir)
    except MissingSplit as e:
        where = ("point data.train_file at a file or a directory with one" if task.name == "custom"
                 else "give data.data_dir a directory with the training split")
        raise MissingSplit(f"{e}. {task.name} has no training split there: set data.train_from: validation to train "
                           f"on a seeded part of its validation split (the rest is evaluated), or {where}") from e
    eval_all = task.load("eval", data_dir)
    one_source = False
    if task.name == "custom":
        from prge.data.custom import split_paths
        from prge.data.sources import is_hf_disk_dataset

        paths = split_paths(data)
        # one file, or one single-split datasets directory (a DatasetDict's splits are apart)
        one_source = paths["train"].resolve() == paths["eval"].resolve() and not is_hf_disk_dataset(paths["train"])
        if one_source:
            one = "file" if paths["train"].is_file() else "dataset"
            print(f"[prge] note: data.train_file and data.eval_file are one {one} ({paths['train']}): the evaluation "
                  "scores examples the run trains on, so it measures fitting, not generalisation", file=sys.stderr)
    if data.protocol == "paper":
        evaluation = select_examples(eval_all, data.eval_examples, seed, shuffle=False)
        warn_missing_classes(task, evaluation, eval_all, data.eval_examples)
        train, dev = select_examples(train_all, data.train_examples, seed, shuffle=True), []
    else:
        needed = data.train_examples + data.dev_examples
        if len(train_all) < needed:
            raise ValueError(f"{task.name}: the mezo protocol needs {needed} train examples "
                             f"({data.train_examples} train + {data.dev_examples} dev), the split has {len(train_all)}")
        shuffled = select_examples(train_all, needed, seed, shuffle=True)
        train, dev = shuffled[:data.train_examples], shuffled[data.train_examples:]
        evaluation = select_examples(eval_all, data.eval_examples, seed, shuffle=True)
    if task.name == "custom" and not one_source:  # one source: noted above
        note_shared_examples(task, train + dev, evaluation)
    return train, dev, evaluation


def note_shared_examples(task, trained: list, evaluated: list) -> None:
    """A note on stderr when evaluation examples are also examples the run trains on (or picks
    its best checkpoint by): the same prompt and answer, a record in both of a custom task's
    files or twice in one. The evaluation measures those by fitting, not generalisation."""
    def example(e) -> tuple:
        return task.prompt(e), e.label, e.response, e.choices

    seen = {example(e) for e in trained}
    shared = sum(example(e) in seen for e in evaluated)
    if shared:
        print(f"[prge] note: {shared} of the {len(evaluated)} evaluation examples are also training examples of this "
              "run (the same prompt and answer): the evaluation measures those by fitting, not generalisation; "
              "remove them from one of the files", file=sys.stderr)


def warn_missing_classes(task, taken: list, split: list, eval_examples: int) -> None:
    """A warning on stderr when the paper protocol's evaluation set (the first eval_examples
    records, unshuffled) lacks a class the evaluation split has: a file sorted by label would
    otherwise be scored on one class, its accuracy and majority baseline measuring that class
    alone. Classification only (a multiple-choice label is a candidate's position)."""
    if task.kind is not CLASSIFICATION or len(taken) == len(split):
        return
    missing = sorted({e.label for e in split} - {e.label for e in taken})
    if missing:
        words = ", ".join(shown_value(task.label_words[i]) for i in missing)
        print(f"prge: warning: data.eval_examples={eval_examples} evaluates the first {len(taken)} of the "
              f"{len(split)} records of the evaluation split (the paper protocol does not shuffle it), and they "
              f"hold no example of label word(s) {words}, which the split has: shuffle the file, raise "
              "data.eval_examples, or take data.protocol: mezo (a seeded shuffle)", file=sys.stderr)


def _split_validation(task, data, seed: int, data_dir) -> tuple[list, list, list]:
    """data.train_from: validation (see split_protocol)."""
    validation = task.load("eval", data_dir)
    pool = select_examples(validation, len(validation), seed, shuffle=True)
    taken = data.train_examples + (data.dev_examples if data.protocol == "mezo" else 0)
    if taken >= len(pool):
        what = (f"{data.train_examples} train + {data.dev_examples} dev" if data.protocol == "mezo"
                else f"{data.train_examples} train")
        raise ValueError(f"{task.name}: data.train_from: validation takes {what} examples from the validation split, "
                         f"which has {len(pool)}: none would be left to evaluate; lower data.train_examples")
    train = pool[: data.train_examples]
    return train, pool[data.train_examples: taken], pool[taken: taken + data.eval_examples]


def setup_tokenizer(model_dir: str | Path) -> ModelTokenizer:
    """The model directory's tokenizer, chat template and stop ids (prge.data.tokens)."""
    return ModelTokenizer(model_dir)


def setup_data(config, model_dir: str | Path | None = None) -> DataSetup:
    """The task of config.data, its splits under config.data.protocol (seeded by run.seed) and
    their encodings with the model's tokenizer (config.model.name unless `model_dir`)."""
    from prge.preflight import read_model_config

    task = task_for(config.data)
    model_dir = Path(model_dir) if model_dir is not None else config_model_dir(config)
    # config.json as the model loader reads it, first: transformers' tokenizer reads it too,
    # and prge's loader names a bad key by file and key.
    read_model_config(config, model_dir)
    tokenizer = setup_tokenizer(model_dir)
    encoder = PromptEncoder(task, tokenizer, config.data.max_length)
    train, dev, evaluation = split_protocol(task, config.data, config.run.seed)
    # The training and dev splits are read for training and the best-checkpoint pick (the primary metric) only.
    train, dev, evaluation = (encoder.encode_all(train, full=False), encoder.encode_all(dev, full=False),
                              encoder.encode_all(evaluation))
    check_batch_size(config, task, len(train))
    if encoder.truncation_report():
        print(encoder.truncation_report(), file=sys.stderr)
    return DataSetup(task, model_dir, tokenizer, encoder, train, dev, evaluation)


def check_batch_size(config, task: Task, examples: int) -> None:
    """data.batch_size at most the training examples a step draws from (the sampler draws a
    batch without replacement): ValueError naming the key's place and the task's data."""
    if config.data.batch_size > examples:
        place = config.places.get("data.batch_size", "data.batch_size")
        raise ValueError(f"{place}: {config.data.batch_size} exceeds the {examples} training examples of "
                         f"{task.description}; lower data.batch_size or give the task more training examples")


def check_token_ids(model_dir, vocab_size: int, examples: list[EncodedExample]) -> None:
    """Every id the tokenizer produced for this run indexes the model's vocabulary (ValueError)."""
    top = 0
    for e in examples:
        partial = [ids for pair in e.partial or [] for ids in pair]  # partial scoring's contexts, continuations
        for ids in [e.prompt_ids, e.answer_ids or [], *(e.options or []), *partial]:
            top = max(top, max(ids, default=0))
    if top >= vocab_size:
        raise ValueError(f"{model_dir}/tokenizer.json: token id {top} is outside the model's vocabulary "
                         f"(vocab_size {vocab_size} in config.json): tokenizer and weights do not belong together")


def weight_format(config, model_dir: Path) -> str:
    """The model.quantize that loading uses (RunConfig.load_quantize), printing
    preflight.weight_format_note's note on stderr where there is one."""
    from prge.preflight import weight_format_note

    note = weight_format_note(config, model_dir)
    if note:
        print(note, file=sys.stderr)
    return config.load_quantize


def note_custom_code(model_dir: Path, model_type: str) -> None:
    """preflight.custom_code_note's note on stderr, where config.json has an auto_map."""
    from prge.preflight import custom_code_note

    note = custom_code_note(model_dir, model_type)
    if note:
        print(note, file=sys.stderr)


def setup_model(config, data: DataSetup | None = None, *, model_dir: str | Path | None = None,
                device: str | None = None):
    """prge.CausalLM of config.model (on `device` when given, e.g. a distributed rank's GPU),
    in config.model.dtype, with config.adapter's LoRA-FA adapters attached when the config
    trains adapters, loaded from adapter.init_from (a PEFT adapter) when set, A folded under W
    when config.model.fold_lora_a is true, and the gated low-rank kernel as
    config.model.gated_low_rank_kernel says. With `data`, the
    model is data.model_dir's and the encoded examples' ids are checked against its vocabulary."""
    from prge._core import CausalLM

    if data is not None:
        model_dir = data.model_dir
    model_dir = Path(model_dir) if model_dir is not None else config_model_dir(config)
    model = CausalLM.from_pretrained(str(model_dir), device or config.model.device, config.model.dtype,
                                     weight_format(config, model_dir), config.model.group_size)
    model.gated_low_rank_kernel = config.model.gated_low_rank_kernel
    note_custom_code(model_dir, model.spec.model_type)
    if data is not None:
        check_token_ids(model_dir, model.spec.vocab_size, data.train + data.dev + data.eval)
    if config.use_adapter:
        from prge.adapters import check_patterns_read_as_peft

        check_patterns_read_as_peft(model, config.adapter, config.places.get("adapter.rank_pattern")
                                    or config.places.get("adapter.alpha_pattern") or "adapter")
        try:
            model.attach_adapters(config.adapter)
        except ValueError as e:  # a target the model's family does not have: named at adapter.targets
            raise ValueError(f"{config.places.get('adapter.targets') or 'adapter.targets'}: {e}") from None
        if config.adapter.init_from:  # a PEFT adapter as the starting point
            from prge.adapters import load_peft

            load_peft(model, config.adapter.init_from, config.adapter, config.places.get("adapter.init_from"))
        model.fold_lora_a = config.model.fold_lora_a
        if config.model.fold_lora_a and not model.lora_a_folded:
            print(f"[prge] note: model.fold_lora_a: true folds nothing in {model_dir.name}: A folds only under a "
                  "dense W (quantized projection weights do not fold: model.quantize: dense loads them dense) and "
                  "only for adapted o_proj, down_proj and q/k/v without biases", file=sys.stderr)
    return model

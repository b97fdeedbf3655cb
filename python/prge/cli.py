"""prge command line.

  prge train CONFIG [--set KEY=VALUE ...]      one fine-tuning run
  prge sweep SWEEP.yaml [--set KEY=VALUE]      every run of a sweep (finished runs are skipped)
  prge sweep SWEEP.yaml --gpus 0,1,...         the same, one run per GPU at a time
  prge sweep SWEEP.yaml --only 'mezo-*'        the runs whose directory names match (repeatable)
  torchrun --nproc-per-node N -m prge train CONFIG  one run over N processes (prge/distributed.py)
  prge report SWEEP.yaml|RUNS_DIR [--out DIR]  Markdown/CSV tables and figures of finished runs
  prge data copy TASK [--from DIR] [--to DIR]  copy a task's files into the user data dir
  prge data list                               tasks and where their data is found
  prge check CONFIG                            validate a config, print every key's effective value
  prge check SWEEP.yaml                        validate every run of a sweep, one line each
  prge generate MODEL_OR_RUN_DIR --prompt TEXT  text from a model or a fine-tuned run (KV cache)
  prge adapters export RUN_DIR --out DIR [--merge] [--overwrite]  the run's adapters in PEFT's format (or merged
                                               into a full Hugging Face model directory; a MeZO
                                               run's trained model with --merge)
  prge export CONFIG --runtime onnx|aoti|executorch  export the training step for an inference runtime
  prge train CONFIG --runtime onnx|aoti|executorch  fine-tune through that runtime"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

RUNTIME_CHOICES = ["eager", "onnx", "aoti", "executorch"]
MAX_MESSAGE = 2000
# prge generate: the seed is a uint64; more new tokens than this is no request anyone means
# (and the model's positions bound it anyway).
MAX_SEED, MAX_NEW_TOKENS = 2**64 - 1, 2**31 - 1


def _load_config(path: str, overrides: list[str]):
    """The config of a file with --set KEY=VALUE applied by the C++ reader to the parsed
    mapping (never to re-serialised text), so that `prge check`, `prge train` and sweeps read
    every value the same way (YAML 1.2 scalars: `yes` stays the string yes)."""
    from prge._core import parse_run_config
    from prge.overrides import parse_assignment, read_text

    config = parse_run_config(read_text(path, "config file"), path, [parse_assignment(o) for o in overrides])
    for warning in config.warnings:
        print(f"prge: warning: {warning}", file=sys.stderr)
    return config


class _Parser(argparse.ArgumentParser):
    """argparse whose mistakes end as every other error does: one `prge: error:` line, exit 2."""

    def error(self, message):
        self.exit(2, f"prge: error: {message} (see `{self.prog} --help`)\n")


def main(argv: list[str] | None = None) -> int:
    """The `prge` command; returns its exit status (a torchrun rank ends here instead:
    prge.distributed.end_process)."""
    try:
        code = _command(argv)
        sys.stdout.flush()  # a reader gone (`prge data list | head -1`) shows here, not at exit
    except BrokenPipeError:
        if not _stdout_closed():
            raise
        code = _quiet_after_closed_stdout()
    if "prge.distributed" in sys.modules:
        sys.modules["prge.distributed"].end_process(code)
    return code


def _stdout_closed() -> bool:
    """True when stdout is a pipe whose reader has gone (poll reports POLLERR on its write end)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no poll, or stdout is no file
        return False


def _quiet_after_closed_stdout() -> int:
    """The reader of stdout stopped reading: end quietly, as `yes | head -1` does (exit status
    128 + SIGPIPE), with stdout pointed at /dev/null so the interpreter's final flush is silent."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + 13


def _command(argv: list[str] | None) -> int:
    parser = _Parser(prog="prge", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="run one fine-tuning job from a YAML config")
    train.add_argument("config")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set estimator.queries=4")
    train.add_argument("--no-progress", action="store_true")
    train.add_argument("--overwrite", action="store_true",
                       help="replace another run's files in run.output_dir (files prge did not write stay)")
    train.add_argument("--resume", action="store_true",
                       help="continue the interrupted run in run.output_dir from its last checkpoint")
    train.add_argument("--resume-changed-data", action="store_true",
                       help="with --resume: continue even though the data differ from the checkpoint's")
    train.add_argument("--runtime", choices=RUNTIME_CHOICES, default="eager",
                       help="eager: prge's C++ trainer; onnx / aoti / executorch: export the step "
                            "and train through that inference runtime (needs estimator.rng: counter)")
    train.add_argument("--engine", choices=RUNTIME_CHOICES, help=argparse.SUPPRESS)  # before 0.3
    train.add_argument("--rank-timeout", type=float, default=None, metavar="SECONDS",
                       help="under torchrun: how long a rank waits for the others before the job stops with an "
                            "error (a dead or hung rank); default 300")
    export = sub.add_parser("export", help="export the P-RGE training step for an inference runtime")
    export.add_argument("config")
    export.add_argument("--runtime", choices=["onnx", "aoti", "executorch"], required=True)
    export.add_argument("--out", help="export directory (default: RUN_OUTPUT_DIR/export_RUNTIME)")
    export.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    export.add_argument("--overwrite", action="store_true", help="write into a directory that is not empty")
    sweep = sub.add_parser("sweep", help="run every configuration of a sweep YAML")
    sweep.add_argument("sweep")
    sweep.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a value in every run, e.g. --set run.steps=300")
    sweep.add_argument("--output-root", help="where the runs go (default: the sweep's output_root)")
    sweep.add_argument("--no-progress", action="store_true")
    sweep.add_argument("--gpus", metavar="0,1,...|all",
                       help="run one run per listed GPU at a time, each in its own process")
    sweep.add_argument("--only", action="append", default=[], metavar="PATTERN",
                       help="only the runs whose directory names match this shell pattern (repeatable, "
                            "case-sensitive; a pattern matching no run is an error), e.g. --only 'mezo-*-seed42'")
    report = sub.add_parser("report", help="tables (Markdown, CSV) and figures of finished runs")
    report.add_argument("source", help="a sweep YAML (its output_root and report: section) or a runs directory")
    report.add_argument("--title")
    report.add_argument("--out", help="directory for <name>.md, CSVs and PNG figures")
    report.add_argument("--no-figures", action="store_true")
    data = sub.add_parser("data", help="task data: copy into the user data dir, list")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    copy = data_sub.add_parser("copy", help="copy a task's published files into the user data dir")
    copy.add_argument("task")
    copy.add_argument("--from", dest="source", help="directory with the files (default: ../shared/data/<task folder>)")
    copy.add_argument("--to", dest="destination", help="target directory (default: user data dir / <task folder>)")
    data_sub.add_parser("list", help="known tasks, their kinds and where their data is found")
    gen = sub.add_parser("generate", help="generate text from a model or a fine-tuned run")
    gen.add_argument("source", help="a run directory (its trained adapters, or a MeZO run's trained weights), a model "
                          "directory or a registry name")
    gen.add_argument("--prompt", action="append", required=True, help="repeat for a batch")
    gen.add_argument("--max-new-tokens", type=int, default=32)
    gen.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    gen.add_argument("--top-k", type=int, default=0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--repetition-penalty", type=float, default=None,
                     help="> 0, 1: none (default: the model's generation_config.json, as transformers' generate)")
    gen.add_argument("--no-repeat-ngram-size", type=int, default=None,
                     help="0: none (default: the model's generation_config.json, as transformers' generate)")
    gen.add_argument("--stop", action="append", default=[],
                     help="also stop at this token (always: the ids transformers' generate stops on for the model, "
                          "from generation_config.json or config.json)")
    gen.add_argument("--chat", action="store_true",
                     help="wrap each prompt with the model's chat template (a user turn + the generation prompt)")
    adapters = sub.add_parser("adapters", help="trained adapters out of prge")
    adapters_sub = adapters.add_subparsers(dest="adapters_command", required=True)
    adapters_export = adapters_sub.add_parser("export", help="a run's adapters in PEFT's LoRA format")
    adapters_export.add_argument("run_dir", help="a directory `prge train` wrote (config.yaml, trained.safetensors)")
    adapters_export.add_argument("--out", required=True, help="directory to write")
    adapters_export.add_argument("--merge", action="store_true",
                                 help="write a full Hugging Face model with (alpha/r) B A folded into W (a MeZO run: "
                                      "its trained weights)")
    adapters_export.add_argument("--overwrite", action="store_true",
                                 help="replace the model or adapter in a directory that is not empty")
    check = sub.add_parser("check", help="validate a config (with its task, model and device on this machine) "
                                         "and print every key's effective value; a sweep file: every run "
                                         "checked as prge sweep checks them, one line each")
    check.add_argument("config")
    check.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    check.add_argument("--data", action="store_true",
                       help="also read the task's files and tokenize every split as prge train does (a .gguf or "
                            "registered model is converted first, for its tokenizer); loads no weights")
    args = parser.parse_args(argv)

    from prge.sweep import RUN_ERRORS  # what `prge` reports as `prge: error:`

    try:
        if args.command == "check" and _is_sweep_file(args.config):
            from prge.overrides import parse_assignment

            if args.data:
                raise ValueError(f"--data with a sweep file ({args.config}): it checks one run's data; pass a run's "
                                 "config (its base config, with --set for the grid's data keys)")

            _check_sweep(args.config, [parse_assignment(s) for s in args.set])
        elif args.command == "check":
            # Every key with its effective value (run directories store the shorter to_yaml()).
            from prge.preflight import check_model_config, check_names, notes

            config = _load_config(args.config, args.set)
            check_names(config)  # what `prge train` would refuse here before loading anything
            check_model_config(config)  # and what it would refuse on reading the model's config.json
            if args.data:
                _check_data(config)
            print(config.to_yaml(every_key=True), end="")
            for note in notes(config):  # and the notes it would print before its first step
                print(note, file=sys.stderr)
            checked = "the config, model, device and the task's data" if args.data else "the config, model and device"
            print(f"[prge] {args.config}: OK: {checked} pass prge train's checks that need no weights"
                  f"{'' if args.data else ' (add --data to read and tokenize the data too)'}", file=sys.stderr)
        elif args.command == "train":
            config = _load_config(args.config, args.set)
            runtime = args.runtime
            if args.engine:
                print(f"prge: warning: --engine is now spelled --runtime (--runtime {args.engine})", file=sys.stderr)
                runtime = args.engine
            if args.rank_timeout is not None and not args.rank_timeout > 0:
                raise ValueError(f"--rank-timeout {args.rank_timeout:g}: must be a number of seconds > 0")
            if runtime == "eager":
                from prge import distributed
                from prge.train import run_training

                if args.resume_changed_data and not args.resume:
                    raise ValueError("--resume-changed-data goes with --resume")
                try:
                    run_training(config, progress=not args.no_progress, overwrite=args.overwrite, resume=args.resume,
                                 rank_timeout=args.rank_timeout or distributed.DEFAULT_TIMEOUT_SECONDS,
                                 resume_changed_data=args.resume_changed_data)
                finally:
                    distributed.stop()
            else:
                from prge import distributed

                if distributed.launched():
                    raise ValueError(f"--runtime {runtime}: training through an inference runtime runs in one "
                                     "process; start it without torchrun")
                if args.resume_changed_data:
                    raise ValueError(f"--runtime {runtime}: the exported step holds the run's batches, so a resume "
                                     "through it continues on the data it was exported with (no --resume-changed-data)")
                if args.engine and args.runtime != "eager" and args.runtime != args.engine:
                    raise ValueError(f"--engine {args.engine} and --runtime {args.runtime}: give one (--runtime)")
                from prge.export.train_through_runtime import train_through_runtime

                train_through_runtime(config, runtime, progress=not args.no_progress, overwrite=args.overwrite,
                                      resume=args.resume)
        elif args.command == "export":
            from prge.export.exporters import export_run
            from prge.models import config_model_dir
            from prge.preflight import check_names
            from prge.run_dir import check_output_dir

            config = _load_config(args.config, args.set)
            check_names(config)
            out = args.out or Path(config.run.output_dir) / f"export_{args.runtime}"
            check_output_dir(out, "--out" if args.out else "run.output_dir", args.overwrite,
                             {"the model directory": config_model_dir(config)})
            export_run(config, args.runtime, out)
        elif args.command == "report":
            _report(args)
        elif args.command == "sweep":
            from prge.sweep import run_sweep

            from prge.overrides import parse_assignment

            from prge.sweep_gpus import parse_gpus

            run_sweep(args.sweep, progress=not args.no_progress, output_root=args.output_root,
                      overrides=[parse_assignment(o) for o in args.set],
                      gpus=parse_gpus(args.gpus) if args.gpus else None, only=args.only)
        elif args.command == "data":
            _data(args)
        elif args.command == "generate":
            _generate(args)
        elif args.command == "adapters":
            from prge.adapters import export_merged, export_peft

            out = (export_merged if args.merge else export_peft)(args.run_dir, args.out, overwrite=args.overwrite)
            what = "Hugging Face model" if args.merge else "PEFT adapter"
            print(f"[prge] {what} written to {out}")
    except KeyboardInterrupt:  # a Ctrl-C outside a training run's own handling
        if os.environ.get("PRGE_DEBUG"):
            raise
        print(f"prge: error: interrupted (Ctrl-C) during prge {args.command}", file=sys.stderr)
        return 2
    except RUN_ERRORS as e:
        # Errors of the C++ core arrive as RuntimeError with the file or key in the message.
        # PRGE_DEBUG=1 shows the traceback for a bug report.
        if isinstance(e, BrokenPipeError) and _stdout_closed():
            raise  # the reader of stdout has gone: main() ends quietly
        if os.environ.get("PRGE_DEBUG"):
            raise
        message = str(e)
        if len(message) > MAX_MESSAGE:  # e.g. a 10 MB model.name echoed back
            message = f"{message[:MAX_MESSAGE]}... ({len(message)} characters)"
        print(f"prge: error: {message}", file=sys.stderr)
        return 2
    return 0


def _check_generation_options(args) -> None:
    """Each sampling option in its range, named (not a pybind TypeError)."""
    import math

    checks = [
        ("--seed", args.seed, 0 <= args.seed <= MAX_SEED, "an integer from 0 to 2^64-1"),
        ("--max-new-tokens", args.max_new_tokens, 1 <= args.max_new_tokens <= MAX_NEW_TOKENS,
         f"an integer from 1 to {MAX_NEW_TOKENS}"),
        ("--temperature", args.temperature, math.isfinite(args.temperature) and args.temperature >= 0,
         "a finite number >= 0 (0: greedy)"),
        ("--top-k", args.top_k, 0 <= args.top_k <= MAX_NEW_TOKENS, "an integer >= 0 (0: no limit)"),
        ("--top-p", args.top_p, 0 < args.top_p <= 1, "a number in (0, 1]"),
    ]
    if args.repetition_penalty is not None:
        penalty = args.repetition_penalty
        checks.append(("--repetition-penalty", penalty, math.isfinite(penalty) and penalty > 0,
                       "a number > 0 (1: none)"))
    if args.no_repeat_ngram_size is not None:
        checks.append(("--no-repeat-ngram-size", args.no_repeat_ngram_size,
                       0 <= args.no_repeat_ngram_size <= MAX_NEW_TOKENS, "an integer >= 0 (0: none)"))
    for option, value, ok, wanted in checks:
        if not ok:
            raise ValueError(f"{option} {value}: must be {wanted}")
    if args.temperature == 0:  # greedy decoding takes the top token: a sampling limit would change nothing
        for option, value, off in (("--top-k", args.top_k, 0), ("--top-p", args.top_p, 1)):
            if value != off:
                raise ValueError(f"{option} {value} limits sampling, and without --temperature (> 0) decoding is "
                                 "greedy, so it would change nothing; pass --temperature T to sample")


def _check_data(config) -> None:
    """`prge check --data`: the splits prge train would read and encode (setup_data: a missing
    file or field, a label outside the task's, an answer that yields no token, ... named as it
    names them) and their token ids against the model's vocabulary; counts on stderr."""
    from prge.preflight import read_model_config
    from prge.setup import check_token_ids, setup_data

    data = setup_data(config)
    check_token_ids(data.model_dir, read_model_config(config, data.model_dir).vocab_size,
                    data.train + data.dev + data.eval)
    counts = ", ".join(f"{len(split)} {name}" for name, split in
                       (("training", data.train), ("dev", data.dev), ("evaluation", data.eval)) if split)
    print(f"[prge] data: {data.task.description}: every record read and checked; {counts} examples (the protocol's "
          "selection: data.train_examples / dev_examples / eval_examples) tokenized", file=sys.stderr)


def _generate(args) -> None:
    from prge.generation import (applied_generation_settings, generate_text, load_model, model_generation_config,
                                 unapplied_generation_settings)
    from prge.setup import setup_tokenizer
    from prge.whitespace import shown_value

    _check_generation_options(args)
    model, model_dir = load_model(args.source)
    tokenizer = setup_tokenizer(model_dir)  # transformers' tokenizer, chat template and stop ids
    longest = max(len(ids) for ids in tokenizer.prompt_ids(args.prompt, chat=args.chat))
    positions = int(model.spec.max_position_embeddings)
    if positions > 0 and longest >= positions:
        raise ValueError(f"--prompt: the longest prompt is {longest} tokens, which leaves no position to generate at "
                         f"within the model's max_position_embeddings {positions} "
                         f"({Path(model_dir) / 'config.json'}); shorten it")
    if positions > 0 and longest + args.max_new_tokens > positions:
        raise ValueError(f"--max-new-tokens {args.max_new_tokens}: with the longest prompt's {longest} tokens that "
                         f"reaches position {longest + args.max_new_tokens}, beyond the model's "
                         f"max_position_embeddings {positions} ({Path(model_dir) / 'config.json'}); use at most "
                         f"{max(positions - longest, 0)}")
    settings = model_generation_config(model_dir)
    unapplied = unapplied_generation_settings(settings)
    if unapplied:
        print(f"[prge] note: {Path(model_dir)}: transformers' generate() would apply {', '.join(unapplied)} from the "
              "model's generation settings; prge generate applies none of them (greedy, or sampling with "
              "--temperature / --top-k / --top-p), so its text can differ", file=sys.stderr)
    applied = applied_generation_settings(settings)
    for name in applied:
        if getattr(args, name) is not None:
            applied[name] = getattr(args, name)
    stop = list(tokenizer.stop_ids)
    for text in args.stop:
        ids = tokenizer.encode([text], specials=False)[0]
        if len(ids) != 1:
            raise ValueError(f"--stop {shown_value(text)} is {len(ids)} tokens; a stop must be one token")
        stop.append(ids[0])
    outputs = generate_text(model, tokenizer, args.prompt, max_new_tokens=args.max_new_tokens,
                            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                            stop=stop, chat=args.chat, **applied)
    for prompt, output in zip(args.prompt, outputs):
        if len(args.prompt) > 1:
            print(f"--- {prompt!r}\n{output}")
        else:  # a continuation reads on from its prompt; a chat reply stands on its own
            print(output if args.chat else f"{prompt}{output}")


def _is_sweep_file(path: str) -> bool:
    """Whether `path` reads as a sweep (a mapping with base, grid or variants, keys only a sweep
    file has) rather than a run config; False where it does not read (the config reader says why)."""
    import yaml

    # The top-level keys from PyYAML's event stream: no node tree is built, so neither a deeply
    # nested value nor a self-holding alias stops it (the readers refuse those by name).
    keys, depth, items, root_is_mapping, documents = set(), 0, 0, False, 0
    try:
        for event in yaml.parse(Path(path).read_text(encoding="utf-8")):
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:  # the config reader refuses a second document by name
                    return False
            elif isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                if depth == 0:
                    root_is_mapping = isinstance(event, yaml.MappingStartEvent)
                items += depth == 1
                depth += 1
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
            elif isinstance(event, (yaml.ScalarEvent, yaml.AliasEvent)) and depth == 1:
                if items % 2 == 0 and isinstance(event, yaml.ScalarEvent):  # a key of the root mapping
                    keys.add(event.value)
                items += 1
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return root_is_mapping and bool({"base", "grid", "variants"} & keys)  # read_sweep names the rest


def _check_sweep(path: str, overrides: list[tuple[str, str]]) -> None:
    """prge check SWEEP.yaml: every run expanded (with --set last) and checked as `prge sweep`
    checks them before its first run (prge.sweep.check_runs: task, model, device, the model's
    config.json); one line per run, and each distinct note once."""
    from prge.preflight import notes
    from prge.sweep import check_runs, expand_sweep, load_sweep_spec, run_notes

    spec = load_sweep_spec(path)
    runs = expand_sweep(path, overrides)
    check_runs(runs, spec.get("mode", "train") == "speed", (spec.get("speed") or {}).get("shape"))
    for label, config in runs:
        print(f"{label}: {config.run.output_dir}")
    for note in run_notes(runs, notes):
        print(note, file=sys.stderr)
    print(f"[prge] {path}: {len(runs)} run{'' if len(runs) == 1 else 's'} checked", file=sys.stderr)


def _report(args) -> None:
    from prge.reporting import collect, write_report
    from prge.reporting.collect import data_files_note, failed, unfinished

    from prge.sweep import expand_home

    # a quoted ~ reaches prge as written (the shell expands it only at a word's start, unquoted)
    source = Path(expand_home(args.source, "prge report"))
    args.out = args.out and expand_home(args.out, "prge report --out")
    not_started = []
    if source.is_file():
        from prge.sweep import load_sweep_spec, not_started_runs

        spec = load_sweep_spec(source)
        runs_dir = Path(spec.get("output_root", f"runs/{source.stem}"))
        settings = spec.get("report") or {}
        title = args.title or settings.get("title", source.stem)
        out = args.out or settings.get("out")
        name = source.stem
        not_started = not_started_runs(source, runs_dir)
    else:
        runs_dir, title, out, name = source, args.title or source.name, args.out, source.name
    runs = collect(runs_dir)
    if note := data_files_note(runs):
        print(note, file=sys.stderr)
    markdown = write_report(runs, title, out, name, figures=not args.no_figures, unfinished=unfinished(runs_dir),
                            not_started=not_started, failed=failed(runs_dir))
    print(markdown, end="")


def _data(args) -> None:
    from prge.data.locations import copy_task_data, find_task_dir, user_data_dir
    from prge.data.tasks import TASKS, get_task

    if args.data_command == "copy":
        task = get_task(args.task)  # unknown task names fail here
        target = copy_task_data(task.data_folder, args.source, args.destination, check=task.check_files)
        print(f"[prge] copied {args.task} to {target}")
        return
    print(f"user data dir: {user_data_dir()}")
    for name, task in sorted(TASKS.items()):
        if task.builtin is not None:
            where = "built in (installed package)"
        else:
            try:
                found = find_task_dir(task.data_folder, name)
                where = str(found)
                if not (found / task.files["train"]).is_file() and not (found / "dataset_dict.json").is_file():
                    where += " (no training split: data.train_from: validation)"
            except FileNotFoundError:
                where = "not found (prge data copy / data.data_dir)"
        print(f"  {name:14s} {task.kind.name:16s} {where}  - {task.description}")


def entry() -> None:
    """The `prge` process (console script, `python -m prge`): main(), then the exit with its status.
    Ctrl-C or SIGTERM after a stopped run, or after the command returned, is ignored: only the
    exit is left (prge.interrupts.ignore_signals_after_a_stop)."""
    from prge.interrupts import ignore_signals_after_a_stop, ignore_stop_signals

    ignore_signals_after_a_stop()
    code = main()
    ignore_stop_signals()
    sys.exit(code)


if __name__ == "__main__":
    entry()

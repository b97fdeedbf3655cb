"""prge command line.

  prge train CONFIG [--set KEY=VALUE ...]      one fine-tuning run
  prge sweep SWEEP.yaml [--set KEY=VALUE]      every run of a sweep (finished runs are skipped)
  prge report SWEEP.yaml|RUNS_DIR [--out DIR]  Markdown/CSV tables and figures of finished runs
  prge data copy TASK [--from DIR] [--to DIR]  copy a task's files into the user data dir
  prge data list                               tasks and where their data is found
  prge check CONFIG                            validate a config, print it with defaults
  prge export CONFIG --runtime onnx|aoti|executorch  export the training step for an inference runtime
  prge train CONFIG --runtime onnx|aoti|executorch  fine-tune through that runtime"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

RUNTIME_CHOICES = ["eager", "onnx", "aoti", "executorch"]


def _load_config(path: str, overrides: list[str]):
    from prge._core import parse_run_config
    from prge.overrides import apply_overrides, parse_assignment

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    text = p.read_text()
    if overrides:
        try:
            tree = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: malformed YAML: {e}") from e
        tree = apply_overrides(tree, dict(parse_assignment(o) for o in overrides))
        text = yaml.safe_dump(tree, sort_keys=False)  # label_words keep their order
    config = parse_run_config(text, path)
    for warning in config.warnings:
        print(f"prge: warning: {warning}", file=sys.stderr)
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prge", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="run one fine-tuning job from a YAML config")
    train.add_argument("config")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set estimator.queries=4")
    train.add_argument("--no-progress", action="store_true")
    train.add_argument("--runtime", choices=RUNTIME_CHOICES, default="eager",
                       help="eager: prge's C++ trainer; onnx / aoti / executorch: export the step "
                            "and train through that inference runtime (needs estimator.rng: counter)")
    train.add_argument("--engine", choices=RUNTIME_CHOICES, help=argparse.SUPPRESS)  # before 0.3
    export = sub.add_parser("export", help="export the P-RGE training step for an inference runtime")
    export.add_argument("config")
    export.add_argument("--runtime", choices=["onnx", "aoti", "executorch"], required=True)
    export.add_argument("--out", help="export directory (default: RUN_OUTPUT_DIR/export_RUNTIME)")
    export.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    sweep = sub.add_parser("sweep", help="run every configuration of a sweep YAML")
    sweep.add_argument("sweep")
    sweep.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a value in every run, e.g. --set run.steps=300")
    sweep.add_argument("--output-root", help="where the runs go (default: the sweep's output_root)")
    sweep.add_argument("--no-progress", action="store_true")
    report = sub.add_parser("report", help="tables (Markdown, CSV) and figures of finished runs")
    report.add_argument("source", help="a sweep YAML (its output_root and report: section) or a runs directory")
    report.add_argument("--title")
    report.add_argument("--out", help="directory for <name>.md, CSVs and PNG figures")
    report.add_argument("--no-figures", action="store_true")
    data = sub.add_parser("data", help="task data: copy into the user data dir, list")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    copy = data_sub.add_parser("copy", help="copy a task's published files into the user data dir")
    copy.add_argument("task")
    copy.add_argument("--from", dest="source", help="directory with the files (default: ../shared/data/TASK)")
    copy.add_argument("--to", dest="destination", help="target directory (default: user data dir / TASK)")
    data_sub.add_parser("list", help="known tasks and where their data is found")
    check = sub.add_parser("check", help="validate a config and print it with defaults filled in")
    check.add_argument("config")
    check.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    from prge._core import ConfigError

    try:
        if args.command == "check":
            print(_load_config(args.config, args.set).to_yaml(), end="")
        elif args.command == "train":
            config = _load_config(args.config, args.set)
            runtime = args.runtime
            if args.engine:
                print(f"prge: warning: --engine is now spelled --runtime (--runtime {args.engine})", file=sys.stderr)
                runtime = args.engine
            if runtime == "eager":
                from prge.train import run_training

                run_training(config, progress=not args.no_progress)
            else:
                from prge.export.train_through_runtime import train_through_runtime

                train_through_runtime(config, runtime, progress=not args.no_progress)
        elif args.command == "export":
            from prge.export.exporters import export_run

            config = _load_config(args.config, args.set)
            export_run(config, args.runtime, args.out or Path(config.run.output_dir) / f"export_{args.runtime}")
        elif args.command == "report":
            _report(args)
        elif args.command == "sweep":
            from prge.sweep import run_sweep

            from prge.overrides import parse_assignment

            run_sweep(args.sweep, progress=not args.no_progress, output_root=args.output_root,
                      overrides=dict(parse_assignment(o) for o in args.set))
        elif args.command == "data":
            _data(args)
    except (ConfigError, ValueError, FileNotFoundError, KeyError, ImportError) as e:
        print(f"prge: error: {e}", file=sys.stderr)
        return 2
    return 0


def _report(args) -> None:
    from prge.reporting import collect, write_report

    source = Path(args.source)
    if source.is_file():
        from prge.sweep import load_sweep_spec

        spec = load_sweep_spec(source)
        runs_dir = Path(spec.get("output_root", f"runs/{source.stem}"))
        settings = spec.get("report") or {}
        title = args.title or settings.get("title", source.stem)
        out = args.out or settings.get("out")
        name = source.stem
    else:
        runs_dir, title, out, name = source, args.title or source.name, args.out, source.name
    markdown = write_report(collect(runs_dir), title, out, name, figures=not args.no_figures)
    print(markdown, end="")


def _data(args) -> None:
    from prge.data.locations import copy_task_data, find_task_dir, user_data_dir
    from prge.data.tasks import TASKS, get_task

    if args.data_command == "copy":
        get_task(args.task)  # unknown task names fail here
        target = copy_task_data(args.task, args.source, args.destination)
        print(f"[prge] copied {args.task} to {target}")
        return
    print(f"user data dir: {user_data_dir()}")
    for name, task in sorted(TASKS.items()):
        if task.builtin is not None:
            where = "built in (installed package)"
        else:
            try:
                where = str(find_task_dir(name))
            except FileNotFoundError:
                where = "not found (prge data copy / data.data_dir)"
        print(f"  {name:10s} {where}  - {task.description}")


if __name__ == "__main__":
    sys.exit(main())

"""Command line: prge train CONFIG [--set k=v ...] | prge sweep SWEEP | prge report DIR | prge check CONFIG."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml


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
        text = yaml.safe_dump(tree)
    return parse_run_config(text, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="run one fine-tuning job from a YAML config")
    train.add_argument("config")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set estimator.queries=4")
    train.add_argument("--no-progress", action="store_true")
    sweep = sub.add_parser("sweep", help="run every configuration of a sweep YAML")
    sweep.add_argument("sweep")
    report = sub.add_parser("report", help="Markdown table of the finished runs under a directory")
    report.add_argument("runs_dir")
    report.add_argument("--title", default="prge runs")
    report.add_argument("--out", help="write the table here instead of printing it")
    check = sub.add_parser("check", help="validate a config and print it with defaults filled in")
    check.add_argument("config")
    check.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    from prge._core import ConfigError

    try:
        if args.command == "check":
            print(_load_config(args.config, args.set).to_yaml(), end="")
        elif args.command == "train":
            from prge.train import run_training

            run_training(_load_config(args.config, args.set), progress=not args.no_progress)
        elif args.command == "report":
            from prge.report import collect, markdown_table

            table = markdown_table(collect(args.runs_dir), args.title)
            if args.out:
                Path(args.out).write_text(table)
            else:
                print(table, end="")
        elif args.command == "sweep":
            from prge.sweep import run_sweep

            run_sweep(args.sweep)
    except (ConfigError, ValueError, FileNotFoundError, KeyError) as e:
        print(f"prge: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The device sweep's runs stopped part-way, carried from one machine to the next so that they
resume there instead of starting again. A call's end stops the run in flight after a step, with a
checkpoint (experiments/device/paper_accuracy.sh); the next call on the same warm machine resumes
it, but the machine, checkpoint and all, is given back when the session ends.

    python experiments/device/stopped_runs.py pack ROOT OUT.tgz [--max-mib 15]
    python experiments/device/stopped_runs.py unpack ARCHIVE ROOT

pack (on the machine, after a sweep call): every run folder under ROOT with a checkpoint pointer
(checkpoint.json) and no summary.json goes into OUT.tgz: its config.yaml, metrics.jsonl,
checkpoint.json, the checkpoint folder the pointer names and its log (ROOT/RUN.log), with paths
ROOT's name/RUN/... as in the runs archive. Runs are taken while the archive stays within
--max-mib (a call sends back files of at most 16 MiB): the LoRA-FA methods' checkpoints (B only)
fit; MeZO's full-parameter ones do not and start again on the next machine. No file is written
when nothing is packed. Prints what it packed and what it left.

unpack (on the next machine, before the sweep): the archive's runs whose folder ROOT lacks. A
folder already there (the warm machine's own copy, further on, or a run finished and kept since)
always wins. The sweep resumes a run from its checkpoint only when its config.yaml is the one the
sweep expands (prge.sweep; otherwise it starts the run again), so an archive older than the tree
costs nothing but its unpacking. Members outside ROOT's name/RUN/ are refused.

Exit status 0, or 2 with `stopped_runs: error: ...` naming the file."""
from __future__ import annotations

import argparse
import json
import sys
import tarfile
import tempfile
from pathlib import Path

RUN_FILES = ("config.yaml", "metrics.jsonl", "checkpoint.json")


def stopped_run_files(run: Path) -> list[Path] | None:
    """The files that carry a stopped run (see pack), or None when `run` is not one: finished, no
    readable checkpoint pointer, or the folder it names missing."""
    if (run / "summary.json").exists() or not all((run / name).is_file() for name in RUN_FILES):
        return None
    try:
        folder = json.loads((run / "checkpoint.json").read_text())["directory"]
    except (ValueError, KeyError, TypeError):
        return None
    checkpoint = run / str(folder)
    if Path(str(folder)).name != str(folder) or not checkpoint.is_dir():
        return None
    files = [run / name for name in RUN_FILES] + sorted(p for p in checkpoint.rglob("*") if p.is_file())
    log = run.with_name(run.name + ".log")
    return files + [log] if log.is_file() else files


def pack(root: Path, archive: Path, max_bytes: int) -> tuple[list[str], list[str]]:
    """Packs the stopped runs under `root` that fit in `max_bytes` (in the sweep's folder order);
    returns (packed, left) run names."""
    packed, left, total = [], [], 0
    members: list[Path] = []
    for run in sorted(p for p in root.iterdir() if p.is_dir()):
        files = stopped_run_files(run)
        if files is None:
            continue
        size = sum(f.stat().st_size for f in files)
        if total + size > max_bytes:
            left.append(f"{run.name} ({size / 2**20:.1f} MiB)")
            continue
        total += size
        members += files
        packed.append(run.name)
    if members:
        archive.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive, "w:gz") as tar:
            for f in members:
                tar.add(f, arcname=str(f.relative_to(root.parent)), recursive=False)
    return packed, left


def unpack(archive: Path, root: Path) -> tuple[list[str], list[str]]:
    """Unpacks the archive's runs that `root` lacks; returns (unpacked, kept as they were) run
    names. Raises ValueError for a member outside root's name/RUN/ or a damaged archive."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            runs: dict[str, list[tarfile.TarInfo]] = {}
            for m in members:
                parts = Path(m.name).parts
                if (m.name.startswith("/") or ".." in parts or len(parts) < 2 or parts[0] != root.name
                        or not (m.isfile() or m.isdir())):
                    raise ValueError(f"{archive}: member {m.name!r} is not a file under {root.name}/RUN/")
                run = parts[1][:-len(".log")] if len(parts) == 2 and parts[1].endswith(".log") else parts[1]
                runs.setdefault(run, []).append(m)
            new = [run for run in sorted(runs) if not (root / run).exists()]
            with tempfile.TemporaryDirectory(dir=root.parent) as tmp:
                tar.extractall(tmp, members=[m for run in new for m in runs[run]], filter="data")
                for run in new:
                    (Path(tmp) / root.name / run).rename(root / run)
                    log = Path(tmp) / root.name / f"{run}.log"
                    if log.is_file() and not (root / log.name).exists():
                        log.rename(root / log.name)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ValueError(f"{archive}: {e}") from None
    return new, [run for run in sorted(runs) if run not in new]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("pack")
    p.add_argument("root", type=Path)
    p.add_argument("archive", type=Path)
    p.add_argument("--max-mib", type=float, default=15.0)
    u = verbs.add_parser("unpack")
    u.add_argument("archive", type=Path)
    u.add_argument("root", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.verb == "pack":
            if not args.root.is_dir():
                raise ValueError(f"{args.root}: no such folder of runs")
            if args.max_mib <= 0:
                raise ValueError(f"--max-mib {args.max_mib:g}: must be positive")
            packed, left = pack(args.root, args.archive, int(args.max_mib * 2**20))
            print(f"stopped runs packed into {args.archive}: {', '.join(packed)}" if packed
                  else "stopped runs: none to pack")
            if left:
                print(f"stopped runs left behind (over {args.max_mib:g} MiB; they start again on the next machine): "
                      + ", ".join(left))
        else:
            if not args.archive.is_file():
                raise ValueError(f"{args.archive}: no such archive")
            args.root.mkdir(parents=True, exist_ok=True)
            new, kept = unpack(args.archive, args.root)
            print(f"stopped runs from {args.archive}: resuming {', '.join(new) or 'none'}"
                  + (f"; already here: {', '.join(kept)}" if kept else ""))
    except (ValueError, OSError) as e:
        print(f"stopped_runs: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

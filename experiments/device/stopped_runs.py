"""The device sweep's runs stopped part-way, carried from one machine to the next so that they
resume there instead of starting again. A call's end stops the run in flight after a step, with a
checkpoint (experiments/device/paper_accuracy.sh); the next call on the same warm machine resumes
it, but the machine, checkpoint and all, is given back when the session ends.

    python experiments/device/stopped_runs.py pack ROOT OUT.tgz [--max-mib 15]
    python experiments/device/stopped_runs.py unpack ARCHIVE ROOT

pack (on the machine, after a sweep call): every run folder under ROOT with a checkpoint pointer
(checkpoint.json) and no summary.json goes into OUT.tgz: its config.yaml, metrics.jsonl,
checkpoint.json, the checkpoint folder the pointer names and its log (ROOT/RUN.log), with paths
ROOT's name/RUN/... as in the runs archive. Runs are taken, the furthest on first, while the
archive stays within --max-mib (a call sends back files of at most 16 MiB): one LoRA-FA
checkpoint (B only, float32: ~8 MiB at Gemma 3 270M, ~10 at SmolLM2-135M) fits, and MeZO's
under run.checkpoint_format: updates (its steps' projected gradients, well under 1 MiB); MeZO's
full-parameter weights do not, and what is left starts again on the next machine. No file is written
when nothing is packed. Prints what it packed and what it left.

unpack (on the next machine, before the sweep): the archive's runs whose folder ROOT lacks. A
folder already there (the warm machine's own copy, further on, or a run finished and kept since)
always wins. The whole archive is read and its gzip checksum checked first, every run must bring
its config.yaml and checkpoint.json, and members other than ROOT's name/RUN/... files and
ROOT's name/RUN.log are refused, all before anything moves into ROOT. The sweep resumes a run from
its checkpoint only when its config.yaml is the one the sweep expands, how checkpoints are stored
aside (prge.sweep, prge.run_dir.normalized; otherwise it starts the run again; a MeZO run stopped
with weights under a sweep now asking for updates goes on checkpointing weights, which stay here); a run whose task data changed since, or a MeZO run
whose updates replay differently there, is refused by `prge train`'s own check: the sweep names
it and goes on with its other runs (delete .device/stopped/NAME_stopped.tgz here, or ROOT/RUN
there, and it starts again).

Exit status 0, or 2 with `stopped_runs: error: ...` naming the file."""
from __future__ import annotations

import argparse
import gzip
import math
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path

from prge import checkpoints

RUN_FILES = ("config.yaml", "metrics.jsonl", checkpoints.POINTER)


def regular_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def stopped_run(run: Path) -> tuple[list[Path], int] | None:
    """The files that carry a stopped run (see pack) and its checkpoint's step, or None when `run`
    is not one: finished, no readable checkpoint pointer, the folder it names missing or not a
    checkpoint-STEP folder, or a link among its files (unpack takes regular files only)."""
    if (run / "summary.json").exists() or not all(regular_file(run / name) for name in RUN_FILES):
        return None
    try:
        pointer = checkpoints.read_pointer(run)
    except (OSError, ValueError):
        return None
    folder = pointer.get("directory")
    if not isinstance(folder, str) or not checkpoints.DIRECTORY.match(folder) or folder.endswith(".tmp"):
        return None
    checkpoint = run / folder
    if not checkpoint.is_dir() or checkpoint.is_symlink():
        return None
    inside = sorted(checkpoint.rglob("*"))
    if any(p.is_symlink() or not (p.is_file() or p.is_dir()) for p in inside):
        return None
    files = [run / name for name in RUN_FILES] + [p for p in inside if p.is_file()]
    log = run.with_name(run.name + ".log")
    return (files + [log] if regular_file(log) else files), pointer["step"]


def pack(root: Path, archive: Path, max_bytes: int) -> tuple[list[str], list[str]]:
    """Packs the stopped runs under `root` that fit in `max_bytes`, the furthest on (checkpoint
    step) first, into `archive`, written under a temporary name and renamed (a call cut short
    leaves no half-written archive); removes an earlier `archive` when nothing is packed. Returns
    (packed, left) run names."""
    packed, left, total = [], [], 0
    members: list[Path] = []
    stopped = [(run, *found) for run in sorted(p for p in root.iterdir() if p.is_dir())
               if (found := stopped_run(run)) is not None]
    for run, files, _ in sorted(stopped, key=lambda item: -item[2]):  # the furthest on first
        size = sum(f.stat().st_size for f in files)
        if total + size > max_bytes:
            left.append(f"{run.name} ({size / 2**20:.1f} MiB)")
            continue
        total += size
        members += files
        packed.append(run.name)
    archive.unlink(missing_ok=True)
    if members:
        archive.parent.mkdir(parents=True, exist_ok=True)
        partial = archive.with_name(archive.name + ".tmp")
        with tarfile.open(partial, "w:gz") as tar:
            for f in members:
                tar.add(f, arcname=str(f.relative_to(root.parent)), recursive=False)
        partial.replace(archive)
    return packed, left


def check_whole(archive: Path) -> None:
    """Reads the gzip stream to its end, so that its checksum and length are checked (tar stops at
    its own end marker and would miss a damaged or cut tail). Raises ValueError naming the file."""
    try:
        with gzip.open(archive, "rb") as stream:
            while stream.read(1 << 20):
                pass
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{archive}: damaged or cut short ({e})") from None


def run_of(member: tarfile.TarInfo, root_name: str, archive: Path) -> str:
    """The run a member belongs to: ROOT/RUN/... (files) or ROOT/RUN.log. Raises ValueError otherwise."""
    parts = member.name.split("/")
    ok = (member.isfile() and len(parts) >= 2 and parts[0] == root_name
          and all(part not in ("", ".", "..") for part in parts)
          and (len(parts) >= 3 or parts[1].endswith(".log")))
    if not ok:
        raise ValueError(f"{archive}: member {member.name!r} is not a file under {root_name}/RUN/ "
                         f"or {root_name}/RUN.log")
    return parts[1][:-len(".log")] if len(parts) == 2 else parts[1]


def unpack(archive: Path, root: Path) -> tuple[list[str], list[str]]:
    """Unpacks the archive's runs that `root` lacks; returns (unpacked, kept as they were) run
    names. Raises ValueError for a damaged archive, a member outside root's name/RUN/ or a run
    without its config.yaml and checkpoint.json, before anything is moved into `root`."""
    check_whole(archive)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            runs: dict[str, list[tarfile.TarInfo]] = {}
            for m in tar.getmembers():
                runs.setdefault(run_of(m, root.name, archive), []).append(m)
            for run, members in runs.items():
                names = {m.name for m in members}
                missing = [f for f in ("config.yaml", "checkpoint.json") if f"{root.name}/{run}/{f}" not in names]
                if missing:
                    raise ValueError(f"{archive}: run {run!r} comes without its {' and '.join(missing)}")
            new = [run for run in sorted(runs) if not (root / run).exists()]
            root.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=root.parent) as tmp:
                tar.extractall(tmp, members=[m for run in new for m in runs[run]], filter="data")
                if new:
                    root.mkdir(exist_ok=True)
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
            if not (math.isfinite(args.max_mib) and args.max_mib > 0):
                raise ValueError(f"--max-mib {args.max_mib:g}: must be a positive number of MiB")
            packed, left = pack(args.root, args.archive, int(args.max_mib * 2**20))
            print(f"stopped runs packed into {args.archive}: {', '.join(packed)}" if packed
                  else "stopped runs: none to pack")
            if left:
                print(f"stopped runs left behind (over {args.max_mib:g} MiB; they start again on the next machine): "
                      + ", ".join(left))
        else:
            if not args.archive.is_file():
                raise ValueError(f"{args.archive}: no such archive")
            new, kept = unpack(args.archive, args.root)
            print(f"stopped runs from {args.archive}: resuming {', '.join(new) or 'none'}"
                  + (f"; already here: {', '.join(kept)}" if kept else ""))
    except (ValueError, OSError) as e:
        print(f"stopped_runs: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

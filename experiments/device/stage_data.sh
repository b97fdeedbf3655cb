#!/usr/bin/env bash
# Task data for the GPU machine, which has no ../shared: the files the tasks of a sweep read
# (each task's published train and validation files, nothing else) packed into a .tgz
# (git-ignored), which experiments/device/stage_model.sh puts in .device/MODEL/a, so that it
# travels in `model.sh stage`'s first call beside the model's first part (a call carries 64 MiB,
# so the data travels packed, 4 MiB instead of 12). experiments/device/task_data.sh unpacks it
# on the machine.
# Usage (repository root, here): bash experiments/device/stage_data.sh [SWEEP.yaml [OUT.tgz]]
#   defaults: configs/sweeps/paper_accuracy.yaml, .device/data.tgz
set -euo pipefail
sweep=${1:-configs/sweeps/paper_accuracy.yaml}
archive=${2:-.device/data.tgz}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
python3 - "$sweep" "$stage" <<'PY'
import shutil, sys
from pathlib import Path

import yaml

from prge.data.locations import find_task_dir
from prge.data.tasks import get_task

spec = yaml.safe_load(Path(sys.argv[1]).read_text())
names = (spec.get("grid") or {}).get("data.task") or [((spec.get("base") or {}).get("data") or {}).get("task")]
for name in names:
    task = get_task(name)
    source = find_task_dir(task.data_folder, name)
    target = Path(sys.argv[2]) / "data" / task.data_folder
    target.mkdir(parents=True)
    for file in task.files.values():
        if (source / file).is_file():  # a task published without its training split has its validation file only
            shutil.copy2(source / file, target / file)
    print(f"{name:14s} {source} -> {', '.join(sorted(p.name for p in target.iterdir()))}")
PY
mkdir -p "$(dirname "$archive")"
tar czf "$archive" -C "$stage" data
du -h "$archive"

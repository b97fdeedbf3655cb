#!/usr/bin/env bash
# The paper tasks' data on the GPU machine, sourced by the sweep scripts: exports PRGE_DATA (every
# task finds $PRGE_DATA/<its folder>) from a carried .device/data tree, or unpacks
# the data.tgz that `model.sh stage` copied to /tmp/prge-carry from .device/MODEL/a
# (experiments/device/stage_model.sh), or a carried .device/data.tgz (experiments/device/stage_data.sh's
# default output), once into /tmp/prge-carry/data. Returns 3 when there is none.
# Usage: source experiments/device/task_data.sh || exit 3
data=/tmp/prge-carry/data
if [ -d .device/data ]; then
  data=$PWD/.device/data
elif [ ! -d "$data" ]; then
  archive=$(ls /tmp/prge-carry/data.tgz .device/*/a/data.tgz .device/data.tgz 2>/dev/null | head -1)
  [ -n "$archive" ] || { echo "no task data: run experiments/device/stage_model.sh here and carry .device/MODEL/a (or stage_data.sh and carry .device/data.tgz)"; return 3; }
  mkdir -p /tmp/prge-carry && tar xzf "$archive" -C /tmp/prge-carry
fi
export PRGE_DATA=$data

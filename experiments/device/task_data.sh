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
  archive=""
  for candidate in /tmp/prge-carry/data.tgz .device/*/a/data.tgz .device/data.tgz; do  # the first found
    [ -f "$candidate" ] && { archive=$candidate; break; }
  done
  [ -n "$archive" ] || { echo "no task data: run experiments/device/stage_model.sh here and carry .device/MODEL/a (or stage_data.sh and carry .device/data.tgz)" >&2; return 3; }
  # Unpacked beside and moved into place whole: a damaged archive leaves no folder a later call would take.
  rm -rf /tmp/prge-carry/data.tmp && mkdir -p /tmp/prge-carry/data.tmp &&
    tar xzf "$archive" -C /tmp/prge-carry/data.tmp && [ -d /tmp/prge-carry/data.tmp/data ] &&
    mv /tmp/prge-carry/data.tmp/data "$data" && rm -rf /tmp/prge-carry/data.tmp ||
    { rm -rf /tmp/prge-carry/data.tmp; echo "task data: could not unpack $archive (no data/ folder in it, or damaged)" >&2; return 3; }
fi
export PRGE_DATA=$data

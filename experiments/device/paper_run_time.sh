#!/usr/bin/env bash
# Issue 26 item 4 on the GPU machine: the GPU time of one run of configs/sweeps/paper_accuracy.yaml
# at the TinyLlama-1.1B and Llama-2-7B shapes, from random-weight models of those shapes
# (experiments/paper_run_time.py; SmolLM2's tokenizer). Needs PRGE_MODEL (source
# experiments/device/model.sh join) and the task data (as paper_accuracy.sh). A call that runs
# out of time can be repeated while the machine is warm: finished short runs are skipped.
# Usage: bash experiments/device/paper_run_time.sh OUT_DIR [SHAPE ...] [-- paper_run_time.py options]
set -uo pipefail
out=${1:?output dir}; shift
mkdir -p "$out"
: "${PRGE_MODEL:?source experiments/device/model.sh join first}"
source experiments/device/task_data.sh || exit 3
shapes=(); while [ $# -gt 0 ] && [ "$1" != "--" ]; do shapes+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#shapes[@]} -gt 0 ] || shapes=(tinyllama-1.1b llama2-7b)
for shape in "${shapes[@]}"; do
  python3 experiments/paper_run_time.py --shape "$shape" --tokenizer-from "$PRGE_MODEL" \
    --model-dir "/tmp/random-$shape" --out "$out/paper_run_time_$shape.md" "$@" 2>&1 | grep -v Warning | tail -12
done

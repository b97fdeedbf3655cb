#!/usr/bin/env bash
# Issue 23 item 2 on the GPU machine: g in bf16 / fp16 against fp32 for the same batches, B and z
# (experiments/precision_soundness.py), then bf16 and fp32 training on Fine Food, 3 seeds each,
# as a sweep over the GPUs (configs/sweeps/precision_fine_food.yaml; also the `prge sweep --gpus`
# check). Needs PRGE_MODEL and PRGE_FINE_FOOD (experiments/device/model.sh join).
# Usage: bash experiments/device/precision.sh OUT_DIR [--gpus 0,1]
set -uo pipefail
out=${1:?output dir}; shift
mkdir -p "$out"
source experiments/device/paths.env
python3 experiments/precision_soundness.py --model "$PRGE_MODEL" --data-dir "$PRGE_FINE_FOOD" --out "$out" 2>&1 | tail -8
timeout "${SWEEP_SECONDS:-420}" prge sweep configs/sweeps/precision_fine_food.yaml --no-progress "$@" \
  --output-root "$DEVICE_RUNS/precision_fine_food" --set model.name="$PRGE_MODEL" --set data.data_dir="$PRGE_FINE_FOOD"
tar czf "$out/precision_fine_food_runs.tgz" --exclude='*.safetensors' -C "$DEVICE_RUNS" precision_fine_food
ls "$DEVICE_RUNS"/precision_fine_food/*/summary.json | wc -l

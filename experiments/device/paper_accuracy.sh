#!/usr/bin/env bash
# Issue 26 item 3 on the GPU machine: the paper accuracy sweep (configs/sweeps/paper_accuracy.yaml:
# 11 tasks x 5 methods x 3 seeds) on a registered model (MODEL, default paths.env's DEFAULT_MODEL,
# SmolLM2-135M; its runs are paper_accuracy/, another model's paper_accuracy_MODEL/, both on the
# machine and in experiments/results/), resumable across calls: each call runs the sweep
# for at most SWEEP_SECONDS (default 540: a call may run 10 minutes), starting the runs estimated
# to end by then and one whose checkpoint travels (PLAN, below); runs still in flight stop after a
# step with a checkpoint (SIGTERM; the sweep ends only after they have written it: a call's
# leftover processes do not outlive it), and the next call skips the finished runs and resumes those, while the machine stays
# warm (DEVICE_RUNS, experiments/device/paths.env, holds them). A cold machine starts from the finished runs
# committed in experiments/results/<that name>/runs.tgz, and resumes the runs an earlier session's
# last call stopped where their checkpoints came back: OUT/<name>_stopped.tgz
# (experiments/device/stopped_runs.py; the LoRA-FA methods' checkpoints fit, and MeZO's updates), which
# keep_runs.py puts in .device/stopped/ here; carry .device/stopped in a call of its own (with a
# model part it passes 64 MiB) that runs `model.sh stage`, which keeps it for this script. Each
# call sends its runs back in $OUT (no weights or checkpoints), and the sweep's whole output in
# OUT/<name>_sweep.log (a resume's replay lines, which the call's output tail may have lost);
# `python experiments/device/keep_runs.py OUT/<name>_runs.tgz [--model MODEL]` here adds the
# finished ones to runs.tgz, regenerates the report and keeps the stopped runs' archive.
# Needs the model (MODEL=M source experiments/device/model.sh join, in this call or an earlier one
# of this warm machine) and the task data (the data.tgz `model.sh stage` copies to /tmp/prge-carry).
# TASKS="sst2 rte" / SEEDS="42" / VARIANTS="lora_fa_q1 prge_q4_dual": a part of the grid and of
# the methods, in that order (same run names, so the parts add up). STEPS=20000: the zeroth-order
# methods at that many steps (--set run.steps; FO-SGD, at the protocol's 1000, left out), kept
# apart in paper_accuracy_steps20000[_MODEL] (keep_runs.py --steps 20000 [--tasks "sst2 rte"]), e.g. STEPS=20000
# TASKS="sst2 rte" for the paper's SST-2 and RTE length (with PLAN=0 until each method has finished
# one run there: the planner estimates from finished runs).
# Usage: bash experiments/device/paper_accuracy.sh OUT_DIR [prge sweep options: --gpus 0,1, --set KEY=VALUE]
set -uo pipefail
out=${1:?output dir}; shift
mkdir -p "$out"
source experiments/device/paths.env
model=${MODEL:-$DEFAULT_MODEL}
PRGE_MODEL=$DEVICE_MODELS/$model  # joined by model.sh in this call or an earlier one on this machine
[ -f "$PRGE_MODEL/model.safetensors" ] ||
  { echo "paper_accuracy: no $model on this machine yet: MODEL=$model source experiments/device/model.sh join" >&2; exit 3; }
source experiments/device/task_data.sh || exit 3
steps=()  # STEPS: another step count, another folder of runs
if [ -n "${STEPS:-}" ]; then
  [[ $STEPS =~ ^[1-9][0-9]*$ ]] || { echo "paper_accuracy: STEPS=$STEPS is not a positive whole number" >&2; exit 2; }
  for arg in "$@"; do
    case "$arg" in run.steps=*|--set=run.steps=*) echo "paper_accuracy: $arg with STEPS: give the steps as STEPS" >&2; exit 2 ;; esac
  done
  steps=(--steps "$STEPS")
fi
name=$(python3 experiments/device/keep_runs.py --print-name --model "$model" "${steps[@]}") || exit 3
root=$DEVICE_RUNS/$name
if [ ! -d "$root" ]; then  # a cold machine: the committed finished runs, if any
  committed=experiments/results/$name/runs.tgz
  mkdir -p "$root" && { [ ! -f "$committed" ] || tar xzf "$committed" -C "$DEVICE_RUNS"; } ||
    { rm -rf "$root"; echo "paper_accuracy: could not unpack $committed into $DEVICE_RUNS" >&2; exit 3; }
fi
# An earlier session's last call's stopped runs: carried in this call, or kept by `model.sh stage`
# in an earlier call on this machine. Unpacking skips the runs already here (resumed or finished).
stopped=.device/stopped/${name}_stopped.tgz
[ -f "$stopped" ] || stopped=${PRGE_CARRY:-/tmp/prge-carry}/stopped/${name}_stopped.tgz
[ ! -f "$stopped" ] || python3 experiments/device/stopped_runs.py unpack "$stopped" "$root" ||
  echo "paper_accuracy: the runs in $stopped start again instead (above)" >&2
sweep=configs/sweeps/paper_accuracy.yaml
if [ -n "${TASKS:-}${SEEDS:-}${VARIANTS:-}${STEPS:-}" ]; then  # the same sweep with a smaller grid, beside it (base path)
  sweep=configs/sweeps/paper_accuracy_part.yaml
  python3 experiments/device/sweep_part.py "$sweep" || { rm -f "$sweep"; exit 2; }
fi
# PLAN=1 (the default): the unfinished runs that are estimated to end within the call
# (experiments/device/plan_runs.py, given the same --set values; a run an earlier call of this warm
# machine stopped counts for the steps after its checkpoint), so that no run is cut that cannot
# resume elsewhere, then on a GPU they leave free a run whose checkpoint travels (plan_runs.py's travels),
# stopped at the call's end; PLAN=0: every unfinished run, in order (on a machine that stays warm).
device_settings=(--set model.name="$PRGE_MODEL" --set model.device=cuda)
[ -z "${STEPS:-}" ] || device_settings+=(--set run.steps="$STEPS")
settings=("${device_settings[@]}")  # and the caller's --set values: what the plan expands the sweep with
only=()
if [ "${PLAN:-1}" = 1 ]; then
  gpus=1 previous=""
  for arg in "$@"; do
    case "$previous|$arg" in
      --gpus\|*) gpus=$arg ;;
      *\|--gpus=*) gpus=${arg#--gpus=} ;;
      --set\|*) settings+=(--set "$arg") ;;
      *\|--only*|*\|--output-root*) echo "paper_accuracy: $arg with PLAN=1: the plan picks the runs; use PLAN=0" >&2; exit 2 ;;
    esac
    previous=$arg
  done
  if [ "$gpus" = all ]; then gpus=$(nvidia-smi -L | wc -l); else gpus=$(( $(tr -cd , <<< "$gpus" | wc -c) + 1 )); fi
  scale=()  # another model's runs are first estimated from the default model's committed ones
  if [ "$model" != "$DEFAULT_MODEL" ]; then
    base=$(python3 experiments/device/keep_runs.py --print-name --model "$DEFAULT_MODEL") || exit 3
    if [ -f "experiments/results/$base/runs.tgz" ]; then
      [ -d "$DEVICE_RUNS/scale_from/$base" ] || { mkdir -p "$DEVICE_RUNS/scale_from" &&
        tar xzf "experiments/results/$base/runs.tgz" -C "$DEVICE_RUNS/scale_from"; } &&
        scale=(--scale-from "$DEVICE_RUNS/scale_from/$base")
    fi
  fi
  planned=$(python3 experiments/device/plan_runs.py "$sweep" "$root" "${SWEEP_SECONDS:-540}" --gpus "$gpus" \
    --timings-from configs/sweeps/paper_accuracy.yaml "${scale[@]}" "${settings[@]}") ||
    { echo "paper_accuracy: plan_runs.py failed (above)" >&2; exit 4; }
  while read -r run; do [ -n "$run" ] && only+=(--only "$run"); done <<< "$planned"
fi
start=$(date +%s)
if [ "${PLAN:-1}" = 1 ] && [ ${#only[@]} -eq 0 ]; then
  echo "paper_accuracy: no run to start in ${SWEEP_SECONDS:-540} s (see plan_runs above)"
else
  timeout --signal=TERM --kill-after=60 "${SWEEP_SECONDS:-540}" \
    prge sweep "$sweep" --no-progress --output-root "$root" \
    "${device_settings[@]}" "${only[@]}" "$@" 2>&1 | grep -v Warning | tee "$out/${name}_sweep.log"
  status=${PIPESTATUS[0]}  # 124: the time was up; non-zero also when runs stopped or one failed (its log above)
fi
echo "sweep call: $(( $(date +%s) - start )) s (prge sweep exit ${status:-none})"
tar czf "$out/${name}_runs.tgz" --exclude='*.safetensors' --exclude='checkpoint*' -C "$DEVICE_RUNS" "$name"
python3 experiments/device/stopped_runs.py pack "$root" "$out/${name}_stopped.tgz"
python3 - "$root" <<'PY' | tee "$out/${name}_times.txt"
import json, sys
from pathlib import Path
runs = sorted(Path(sys.argv[1]).glob("*/summary.json"))
print(f"finished runs: {len(runs)} in {sys.argv[1]}")
for path in runs:
    s = json.loads(path.read_text())
    print(f"{path.parent.name:45s} {s['steps']:5d} steps {1000 * (s.get('mean_step_seconds') or 0):7.2f} ms/step  "
          f"accuracy {s.get('accuracy_before', float('nan')):.4f} -> {s.get('accuracy_after', float('nan')):.4f}")
PY

#!/usr/bin/env bash
# Issue 26: the paper protocol's ARC runs diverged on the GPU and not on the CPU (NOTES.md,
# session 14). Cause, found with this script's first part (session 15): the optimizer made its
# step scalars anew every step, so a CUDA graph replayed after other captures read lr_t from a
# freed tensor (csrc/prge/devices.h). The script stays as the check that the step paths agree on
# task-like and on ARC's own batches. On the GPU machine, after
# `source experiments/device/model.sh join` (PRGE_MODEL, task data):
#   1. gpu_checks' many-shapes and lr-0 checks: first order, ZO q = 1 and MeZO over task-like
#      batches of shapes in no fixed order, graphed / uncaptured / GPU plain / CPU plain on the same
#      weights, and at lr 0 nothing trained may move;
#   2. the FO-SGD and ZO LoRA-FA q = 1 ARC-Easy seed-42 runs' own batches through every step path
#      (experiments/step_paths_on_task.py), 60 steps, with the CPU's plain path beside them.
# Usage: bash experiments/device/arc_question.sh OUT_DIR
set -uo pipefail
out=${1:?output dir}
mkdir -p "$out"
: "${PRGE_MODEL:?source experiments/device/model.sh join first}"
source experiments/device/task_data.sh || exit 3
python3 experiments/gpu_checks.py --only check_device_steps_many_shapes check_replays_keep_weights_at_lr_zero 2>&1 | grep -v Warning \
  | tee "$out/many_shapes.txt"
configs=/tmp/arc_question_configs
mkdir -p "$configs"
python3 - "$configs" <<'PY' || exit 4  # the two runs' configs as the paper sweep expands them
import sys
from pathlib import Path

from prge.sweep import expand_sweep

wanted = {"fo_sgd_lora_fa-taskarc_easy-seed42", "lora_fa_q1-taskarc_easy-seed42"}
for _, config in expand_sweep("configs/sweeps/paper_accuracy.yaml", output_root="/tmp/arc_question_runs"):
    name = Path(config.run.output_dir).name
    if name in wanted:
        (Path(sys.argv[1]) / f"{name}.yaml").write_text(config.to_yaml())
        wanted.discard(name)
sys.exit(f"not in the sweep: {sorted(wanted)}" if wanted else 0)
PY
for run in fo_sgd_lora_fa-taskarc_easy-seed42 lora_fa_q1-taskarc_easy-seed42; do
  python3 experiments/step_paths_on_task.py "$configs/$run.yaml" --steps 60 --cpu --eval-first \
    --set model.name="$PRGE_MODEL" --set model.device=cuda --set data.eval_examples=64 2>&1 | grep -v Warning \
    | tee "$out/step_paths_$run.txt"
done

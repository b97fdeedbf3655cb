#!/usr/bin/env bash
# The step benchmark (experiments/bench_step.py: prge's step beside transformers eager / compiled /
# CUDA-graphed and the paper's recipe, in one process) at the given shapes, and optionally the
# kernel table of one step (experiments/profile_step.py).
# Usage: bash experiments/device/bench.sh OUT_DIR SHAPE:SEQ_LEN [SHAPE:SEQ_LEN ...] [-- bench args]
set -uo pipefail
out=${1:?output dir}; shift
mkdir -p "$out"
shapes=(); while [ $# -gt 0 ] && [ "$1" != "--" ]; do shapes+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
for s in "${shapes[@]}"; do
  python3 experiments/bench_step.py --shape "${s%%:*}" --seq-len "${s##*:}" --skip-eager --peer-queries 16 \
    --out "$out" "$@" 2>&1 | tail -24
done

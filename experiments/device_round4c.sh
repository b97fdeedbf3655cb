#!/usr/bin/env bash
# Third device call: the GPU checks (now with the distributed step's halves) and one rank's
# share of a distributed step against the whole single-GPU step, TinyLlama-1.1B shape, bf16,
# T = 256, with the share's forwards captured as CUDA graphs.
# Usage (repository root): bash experiments/device_round4c.sh OUT_DIR
set -uo pipefail
out=${1:?output dir}
source experiments/device_build.sh
common=(--device cuda --shape tinyllama-1.1b --dtype bfloat16 --seq-len 256 --world-sizes 1 --warmup 3 --steps 10)
for qb in "16 1" "2 1" "1 4"; do
  set -- $qb
  echo "q=$1 b=$2: rows '1, trainer.step' (whole step, CUDA graph) and '1' (the split step: share, all_gather, update)"
  timeout 90 python3 experiments/bench_distributed.py "${common[@]}" --queries $1 --batch $2 | grep "^| 1"
done | tee "$out/distributed_shares.txt"
timeout 60 python3 experiments/bench_distributed.py --device cuda --gather-only --queries 16 --world-sizes 1 | grep "^| 1" | tee -a "$out/distributed_shares.txt"
python3 -X faulthandler experiments/gpu_checks.py --out "$out/gpu_checks.txt" 2>&1 | grep -c "^PASS"

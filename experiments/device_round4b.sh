#!/usr/bin/env bash
# Second device call: the step benchmark at TinyLlama-1.1B, one rank's share of a q = 16 step at
# 8 GPUs (q = 2, b = 1), and a profile of q = 16 at SmolLM2-135M.
# Usage (repository root): bash experiments/device_round4b.sh OUT_DIR
set -uo pipefail
out=${1:?output dir}
source experiments/device_build.sh
python3 experiments/bench_distributed.py --device cuda --shape tinyllama-1.1b --dtype bfloat16 --seq-len 256 \
  --world-sizes 1 --warmup 3 --steps 10 --queries 2 --batch 1 --out "$out" | tail -8
python3 experiments/profile_step.py --shape smollm2-135m --seq-len 128 --queries 16 --out "$out/profile_smollm2-135m_T128_q16.md" 2>&1 | tail -3
python3 experiments/bench_step.py --shape tinyllama-1.1b --seq-len 256 --skip-eager --peer-queries 16 --out "$out" 2>&1 | tail -30

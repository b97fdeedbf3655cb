#!/usr/bin/env bash
# One device call: build, the GPU checks (every fast path against its plain path), the
# distributed measurements one GPU allows, then the step benchmark at SmolLM2-135M.
# Usage (repository root): bash experiments/device_round4.sh OUT_DIR
set -uo pipefail
out=${1:?output dir}
bash experiments/device_distributed.sh "$out"   # builds first
python3 -X faulthandler experiments/gpu_checks.py --out "$out/gpu_checks.txt" 2>&1 | tail -5
python3 experiments/bench_step.py --shape smollm2-135m --seq-len 128 --skip-eager --peer-queries 16 --out "$out" 2>&1 | tail -30

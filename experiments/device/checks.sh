#!/usr/bin/env bash
# Every GPU fast path against the plain path it replaces (experiments/gpu_checks.py) and CUDA
# against CPU logits (gpu_consistency.py). Usage: bash experiments/device/checks.sh OUT_DIR
set -uo pipefail
out=${1:?output dir}
mkdir -p "$out"
python3 -X faulthandler experiments/gpu_checks.py --out "$out/gpu_checks.txt" 2>&1 | tail -3
echo "gpu_checks: $(grep -c '^PASS' "$out/gpu_checks.txt") PASS, $(grep -c '^FAIL' "$out/gpu_checks.txt") FAIL"
grep '^FAIL' "$out/gpu_checks.txt"
python3 -X faulthandler experiments/gpu_consistency.py 2>&1 | tee "$out/gpu_consistency.txt" | tail -3

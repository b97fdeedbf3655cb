#!/usr/bin/env bash
# Issue 9, fifth round, one device call: build, how much a cuBLAS workspace holds per stream,
# the GPU checks (every fast path against its plain path), the step benchmark at both shapes
# (SmolLM2-135M T = 128, TinyLlama-1.1B T = 256) and the kernel table of the 135M q = 16 step.
# Usage (repository root): bash experiments/device_round5.sh OUT_DIR
set -uo pipefail
out=${1:?output dir}
source experiments/device_build.sh
python3 experiments/diagnostics/cublas_workspace.py | tee "$out/cublas_workspace.txt"
python3 -X faulthandler experiments/gpu_checks.py --out "$out/gpu_checks.txt" 2>&1 | grep -c "^PASS"
grep "^FAIL" "$out/gpu_checks.txt"
python3 experiments/bench_step.py --shape smollm2-135m --seq-len 128 --skip-eager --peer-queries 16 --out "$out" 2>&1 | tail -20
python3 experiments/profile_step.py --shape smollm2-135m --seq-len 128 --queries 16 --rows 14 --out "$out" | tail -20
python3 experiments/bench_step.py --shape tinyllama-1.1b --seq-len 256 --skip-eager --peer-queries 16 --out "$out" 2>&1 | tail -20

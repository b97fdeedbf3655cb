#!/usr/bin/env bash
# Build prge on the GPU machine, check the CUDA path, run the step benchmark (bf16).
# Usage (repository root): bash experiments/device_bench.sh OUT_DIR [bench args...]
set -uo pipefail
out=${1:?output dir}; shift
start=$(date +%s)
source experiments/device_build.sh
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"
python3 -X faulthandler experiments/gpu_consistency.py 2>&1 | tee "$out/gpu_consistency.txt"
python3 experiments/bench_step.py --out "$out" "$@"

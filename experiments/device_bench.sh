#!/usr/bin/env bash
# Build prge on the GPU machine, check the CUDA path, run the step benchmark (bf16).
# Usage (repository root): bash experiments/device_bench.sh OUT_DIR [bench args...]
set -uo pipefail
out=${1:?output dir}; shift
export PYTHONUNBUFFERED=1
start=$(date +%s)
python3 -m pip install -q --no-build-isolation --no-deps --no-cache-dir \
  -C build-dir=/tmp/prge-build -C cmake.define.PRGE_BUILD_TESTS=OFF . 2>&1 | tail -20
echo "build: $(( $(date +%s) - start )) s"
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"
python3 -X faulthandler experiments/gpu_consistency.py 2>&1 | tee "$out/gpu_consistency.txt"
python3 experiments/bench_step.py --out "$out" "$@"

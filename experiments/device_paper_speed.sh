#!/usr/bin/env bash
# On the GPU machine: build prge, run the paper speed sweep (configs/sweeps/paper_speed.yaml)
# and the engine benchmark on CUDA. Runs land in OUT_DIR; tables and figures are then made
# with `prge report OUT_DIR/runs/paper_speed --out experiments/results/paper_speed`.
# Usage (repository root): bash experiments/device_paper_speed.sh OUT_DIR
set -uo pipefail
out=${1:?output dir}
start=$(date +%s)
source experiments/device_build.sh
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"
timeout 280 prge sweep configs/sweeps/paper_speed.yaml --no-progress --output-root "$out/runs/paper_speed"
echo "sweep done: $(( $(date +%s) - start )) s"
timeout 300 python3 experiments/bench_runtimes.py --shape smollm2-135m --layers 6 --device cuda --queries 4 \
  --batch 4 --seq-len 64 --runtimes aoti --out "$out" 2>&1 | grep -v Warning
echo "total: $(( $(date +%s) - start )) s"

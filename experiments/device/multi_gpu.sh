#!/usr/bin/env bash
# Issue 23 item 3 on a machine with 2 or more GPUs (nvidia-h200-x2): `prge train` on 1 GPU against
# `torchrun -m prge train` on all of them (query and data parallel, bf16 and fp32, SmolLM2-135M on
# Fine Food: experiments/multi_gpu_product.py), then the TinyLlama-1.1B-shape step benchmark of
# experiments/bench_distributed.py (q = 16 b = 1, q = 4 b = 4, all_gather latency).
# Needs PRGE_MODEL and PRGE_FINE_FOOD (experiments/device/model.sh join).
# Usage: bash experiments/device/multi_gpu.sh OUT_DIR
set -uo pipefail
out=${1:?output dir}
mkdir -p "$out"
gpus=$(python3 -c "import torch; print(torch.cuda.device_count())")
nvidia-smi topo -m > "$out/topology.txt"
timeout "${PRODUCT_SECONDS:-360}" python3 experiments/multi_gpu_product.py --model "$PRGE_MODEL" \
  --data-dir "$PRGE_FINE_FOOD" --gpus "$gpus" --out "$out" 2>&1 | grep -v Warning | tail -12
worlds=$(python3 -c "print(','.join(str(w) for w in (1, 2, 4, 8) if w <= $gpus))")
common=(--device cuda --shape tinyllama-1.1b --dtype bfloat16 --seq-len 256 --world-sizes "$worlds" --warmup 3 --steps 10 --out "$out")
python3 experiments/bench_distributed.py "${common[@]}" --queries 16 --batch 1 | tail -6
python3 experiments/bench_distributed.py "${common[@]}" --queries 4 --batch 4 | tail -6
python3 experiments/bench_distributed.py --device cuda --gather-only --queries 16 --world-sizes "$worlds" --out "$out" | tail -4

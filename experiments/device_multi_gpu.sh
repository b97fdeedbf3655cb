#!/usr/bin/env bash
# Issue 14 in one call on a machine with 2 or more GPUs (nvidia-h200-x2 / -x4): TinyLlama-1.1B
# shape, bf16, T = 256, against 1 GPU in the same call: q = 16 with b = 1 and q = 4 with b = 4
# (query parallel, data parallel and, on 4 GPUs, the 2 x 2 grid): step time, speed-up, bytes per
# step, all_gather latency and final B against the 1-GPU run (bench_distributed.py's table).
# Usage (repository root): bash experiments/device_multi_gpu.sh OUT_DIR
set -uo pipefail
out=${1:?output dir}
source experiments/device_build.sh
gpus=$(python3 -c "import torch; print(torch.cuda.device_count())")
worlds=1,2; [ "$gpus" -ge 4 ] && worlds=1,2,4
nvidia-smi topo -m | tee "$out/topology.txt"
common=(--device cuda --shape tinyllama-1.1b --dtype bfloat16 --seq-len 256 --world-sizes "$worlds" --warmup 3 --steps 10 --out "$out")
python3 experiments/bench_distributed.py "${common[@]}" --queries 16 --batch 1 | tail -12
python3 experiments/bench_distributed.py "${common[@]}" --queries 4 --batch 4 | tail -12
python3 experiments/bench_distributed.py --device cuda --gather-only --queries 16 --world-sizes "$worlds" --out "$out" | tail -8

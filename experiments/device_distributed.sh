#!/usr/bin/env bash
# On the GPU machine: what one GPU can show of distributed P-RGE (issue 14 needs several).
#   - the split step (DistributedStep: this rank's share, one NCCL all_gather, the update) against
#     trainer.step, same process, TinyLlama-1.1B shape, bf16, T = 256: q = 16, b = 1 (the whole
#     step) and q = 2, b = 1 / q = 1, b = 4 (one rank's share at 8 / 4 GPUs);
#   - all_gather latency of the step's payload: NCCL with one rank, gloo with 2, 4, 8 processes.
# Usage (repository root): bash experiments/device_distributed.sh OUT_DIR
set -uo pipefail
out=${1:?output dir}
source experiments/device_build.sh
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" | tee "$out/device.txt"
common=(--device cuda --shape tinyllama-1.1b --dtype bfloat16 --seq-len 256 --world-sizes 1 --warmup 3 --steps 10)
python3 experiments/bench_distributed.py "${common[@]}" --queries 16 --batch 1 --out "$out/q16_b1"
python3 experiments/bench_distributed.py "${common[@]}" --queries 2 --batch 1 --out "$out/q2_b1"
python3 experiments/bench_distributed.py "${common[@]}" --queries 1 --batch 4 --out "$out/q1_b4"
python3 experiments/bench_distributed.py "${common[@]}" --queries 4 --batch 4 --out "$out/q4_b4"
python3 experiments/bench_distributed.py --device cuda --gather-only --queries 16 --world-sizes 1 --out "$out/nccl"
python3 experiments/bench_distributed.py --device cpu --gather-only --queries 16 --world-sizes 2,4,8 --out "$out/gloo"

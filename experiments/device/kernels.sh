#!/usr/bin/env bash
# prge's layer kernels on the GPU machine, before anything trains with them: their checks against
# ATen (experiments/gpu_checks.py: small and layer-sized cases, every bfloat16 SwiGLU gate, a
# model's logits with the kernels on and off, the Triton gated low-rank kernel on awkward shapes
# and in a bf16 P-RGE step against the GEMM path), then their timing against ATen eager,
# torch.compile and a copy of the same bytes (experiments/bench_layer_kernels.py).
# Usage: [KERNEL_BENCH=0] bash experiments/device/kernels.sh OUT_DIR [SHAPE ...]   (default qwen2.5-1.5b
# llama3.2-1b; KERNEL_BENCH=0: the checks without the timing)
set -uo pipefail
out=${1:?output dir}; shift
mkdir -p "$out"
if [ $# -eq 0 ]; then shapes=(qwen2.5-1.5b llama3.2-1b); else shapes=("$@"); fi
python3 -X faulthandler experiments/gpu_checks.py --out "$out/gpu_checks_kernels.txt" \
  --only check_kernels_vs_aten check_swiglu_every_bf16_gate check_layer_kernels check_gated_low_rank_kernel \
  check_gated_low_rank_model 2>&1 | tail -3
echo "kernel checks: $(grep -c '^PASS' "$out/gpu_checks_kernels.txt") PASS, $(grep -c '^FAIL' "$out/gpu_checks_kernels.txt") FAIL"
grep '^FAIL' "$out/gpu_checks_kernels.txt"
[ "${KERNEL_BENCH:-1}" = 0 ] && exit 0  # the checks only
shape_args=(); for s in "${shapes[@]}"; do shape_args+=(--shape "$s"); done
python3 experiments/bench_layer_kernels.py "${shape_args[@]}" --out "$out" 2>&1 | grep -v Warning | tail -30

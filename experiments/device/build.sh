#!/usr/bin/env bash
# Build and install prge on the GPU machine; sourced by the other device scripts. Python
# wheels carried in .whl (the machine reaches no registry) are installed first.
# Usage (repository root): source experiments/device/build.sh
export PYTHONUNBUFFERED=1
# NVLink multicast stays off (a program using it can take the host's shared GPUs down).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
build_start=$(date +%s)
# The kernels (CUDA and Triton) for the machine's own GPUs only (every kind lent is an H200, sm_90).
# torch's CMake chooses the architectures from TORCH_CUDA_ARCH_LIST (csrc/CMakeLists.txt); set it to
# e.g. "8.0;9.0" for more.
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
python3 -m pip install -q --no-build-isolation --no-deps --no-cache-dir \
  -C build-dir=/tmp/prge-build -C cmake.define.PRGE_BUILD_TESTS=OFF . 2>&1 | tail -20
python3 - <<'PY'
import torch, prge
variants = len(prge._core.layer_kernels.triton_kernels()) if prge.cuda_built else 0
print("torch", torch.__version__, torch.cuda.device_count(), "x", torch.cuda.get_device_name(), "| prge cuda:",
      prge.cuda_built, "| Triton kernel variants:", variants)
PY
echo "build: $(( $(date +%s) - build_start )) s"

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
# The kernels for the machine's own GPUs only (every kind lent is an H200, sm_90): half the nvcc work
# of the default 80;90 (csrc/CMakeLists.txt). PRGE_CUDA_ARCHS overrides it (e.g. "80;90").
python3 -m pip install -q --no-build-isolation --no-deps --no-cache-dir \
  -C build-dir=/tmp/prge-build -C cmake.define.PRGE_BUILD_TESTS=OFF \
  -C cmake.define.CMAKE_CUDA_ARCHITECTURES="${PRGE_CUDA_ARCHS:-90}" . 2>&1 | tail -20
python3 -c "import torch, prge; print('torch', torch.__version__, torch.cuda.device_count(), 'x', torch.cuda.get_device_name(), '| prge cuda:', prge.cuda_built)"
echo "build: $(( $(date +%s) - build_start )) s"

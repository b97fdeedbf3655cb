#!/usr/bin/env bash
# Build and install prge on the GPU machine (sourced by the device_*.sh scripts).
export PYTHONUNBUFFERED=1
build_start=$(date +%s)
python3 -m pip install -q --no-build-isolation --no-deps --no-cache-dir \
  -C build-dir=/tmp/prge-build -C cmake.define.PRGE_BUILD_TESTS=OFF . 2>&1 | tail -20
echo "build: $(( $(date +%s) - build_start )) s"

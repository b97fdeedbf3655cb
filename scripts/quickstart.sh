#!/usr/bin/env bash
# Main job: install, build, then fine-tune SmolLM2-135M-Instruct with P-RGE (dual, q=2)
# on Amazon Fine Food reviews on the CPU, printing accuracy before and after.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
prge train configs/quickstart.yaml "$@"

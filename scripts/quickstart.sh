#!/usr/bin/env bash
# Main job: install, build, then fine-tune SmolLM2-135M-Instruct with P-RGE (dual) on
# Amazon Fine Food reviews on the CPU, printing accuracy and macro-F1 before and after
# beside the majority-class baseline. Extra arguments go to `prge train`
# (e.g. --set run.steps=20). The demo's own output directory is replaced on every run
# (--overwrite); runs of your own configs refuse to overwrite another run's files.
set -euo pipefail
cd "$(dirname "$0")/.."
PRGE_INSTALL=main bash scripts/install_deps.sh  # without the Gemma weights the job does not use
python3 -m prge train configs/quickstart.yaml --overwrite "$@"

#!/usr/bin/env bash
# Makes, here, what the device scripts carry to the GPU machine (all git-ignored), from what
# scripts/install_deps.sh installed:
#   .device/a/smollm2.gguf.part1   SmolLM2-135M's GGUF, first 50 MiB (a call carries 64 MiB)
#   .device/a/model_files/         the converted model's files other than its weights (tokenizer, config)
#   .device/a/data.tgz             the paper tasks' data (experiments/device/stage_data.sh)
#   .device/b/smollm2.gguf.part2   the GGUF's rest
#   .whl/                          wheels the machine lacks (gguf, for the conversion there)
# then experiments/device/model.sh stage / join put the model together there.
# Usage (repository root, here): bash experiments/device/stage_model.sh
set -euo pipefail
mkdir -p .device/a .device/b .whl
read -r gguf model_dir < <(python3 - <<'PY' | tail -1  # converting first prints a line
from prge.models import REGISTERED, resolve_model
model_dir = resolve_model("smollm2-135m")
print(REGISTERED["smollm2-135m"].gguf(), model_dir)
PY
)
head -c $((50 << 20)) "$gguf" > .device/a/smollm2.gguf.part1
tail -c +$(((50 << 20) + 1)) "$gguf" > .device/b/smollm2.gguf.part2
cmp <(cat .device/a/smollm2.gguf.part1 .device/b/smollm2.gguf.part2) "$gguf"
rm -rf .device/a/model_files && mkdir .device/a/model_files
find "$model_dir" -maxdepth 1 -type f ! -name '*.safetensors' -exec cp {} .device/a/model_files/ \;
python3 -m pip download -q --no-deps --dest .whl "gguf==$(python3 -c 'import importlib.metadata as m; print(m.version("gguf"))')"
bash experiments/device/stage_data.sh
du -sh .device/a .device/b .whl

#!/usr/bin/env bash
# SmolLM2-135M on the GPU machine (experiments/device/stage_model.sh makes what it carries, here).
# It reaches no registry and a call carries at most 64 MiB, so the GGUF (94 MiB) travels in two
# parts: call 1 carries .device/a (the first part, task data, fine_food CSVs, the converted
# model's tokenizer files), call 2 (within the machine's warm window) carries .device/b (the
# rest); the parts are joined and converted once, in /tmp.
#   bash experiments/device/model.sh stage     # call 1: keep the first part on the machine
#   source experiments/device/model.sh join    # call 2: join, convert; exports PRGE_MODEL, PRGE_FINE_FOOD
# The machine is given back after ~30 s idle: send call 2 as soon as call 1 returns. Converting
# needs the gguf package: carry .whl (build.sh installs it into /tmp/site, on PYTHONPATH). Source
# join without a pipe after it (`source ... | tail` runs in a subshell and exports nothing).
set -uo pipefail
carry=/tmp/prge-carry
case "${1:?stage|join}" in
  stage)
    mkdir -p "$carry" && cp -r .device/a/. "$carry/" && ls "$carry" ;;
  join)
    [ -f "$carry/smollm2.gguf.part1" ] || { echo "the machine went cold: stage the first part again"; return 3 2>/dev/null || exit 3; }
    source experiments/device/paths.env
    export PRGE_MODEL=$DEVICE_MODEL_DIR PRGE_FINE_FOOD=$carry/fine_food
    if [ ! -f "$PRGE_MODEL/model.safetensors" ]; then
      python3 -c "import gguf" 2>/dev/null || { echo "no gguf package: carry .whl and source build.sh first"; return 4 2>/dev/null || exit 4; }
      cat "$carry/smollm2.gguf.part1" .device/b/smollm2.gguf.part2 > "$carry/smollm2.gguf"
      mkdir -p "$PRGE_MODEL" && cp "$carry"/model_files/* "$PRGE_MODEL/"
      python3 - <<'PY'
import os
import prge.models.gguf_convert as g
g._export_tokenizer = lambda gguf, out: None  # the tokenizer files were converted here and carried
g.convert_gguf("/tmp/prge-carry/smollm2.gguf", os.environ["PRGE_MODEL"])
PY
    fi
    ls "$PRGE_MODEL" ;;
esac

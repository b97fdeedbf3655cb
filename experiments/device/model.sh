#!/usr/bin/env bash
# A registered model on the GPU machine (MODEL, default paths.env's DEFAULT_MODEL, SmolLM2-135M;
# experiments/device/stage_model.sh MODEL makes what it carries, here). The machine reaches no
# registry and a call carries at most 64 MiB, so the GGUF travels in parts, one call each: call 1
# carries .device/MODEL/a (the first part, task data, fine_food CSVs, the converted model's
# tokenizer files) and .whl, each later call the next part (.device/MODEL/b, c, ...), all within
# the machine's warm window; the parts are joined, checked and converted once, in /tmp.
#   MODEL=M bash experiments/device/model.sh stage     # every call: keep the part it carries
#   MODEL=M source experiments/device/model.sh join    # the last call, after stage: join, check,
#                                                      # convert; exports PRGE_MODEL, PRGE_FINE_FOOD
# The machine is given back after ~30 s idle: send each call as soon as the one before returns.
# Converting needs the gguf package: carry .whl in call 1 and source build.sh there (it installs
# it into /tmp/site; later calls `export PYTHONPATH=/tmp/site`). Source join without a pipe after
# it (`source ... | tail` runs in a subshell and exports nothing).
set -uo pipefail
source experiments/device/paths.env
model=${MODEL:-$DEFAULT_MODEL}
carry=/tmp/prge-carry
case "${1:?stage|join}" in
  stage)
    mkdir -p "$carry"
    found=0
    for part in .device/"$model"/*/; do
      [ -d "$part" ] && cp -r "$part". "$carry/" && found=1
    done
    [ "$found" = 1 ] || { echo "model.sh: no .device/$model/<part> carried (stage_model.sh $model here)"; exit 3; }
    ls "$carry" ;;
  join)
    export PRGE_MODEL=$DEVICE_MODELS/$model PRGE_FINE_FOOD=$carry/fine_food
    if [ ! -f "$PRGE_MODEL/model.safetensors" ]; then
      [ -f "$carry/$model.parts" ] || { echo "the machine went cold: stage every part again"; return 3 2>/dev/null || exit 3; }
      read -r parts sha < "$carry/$model.parts"
      missing=""
      for ((k = 1; k <= parts; k++)); do [ -f "$carry/$model.gguf.part$k" ] || missing+=" $k"; done
      [ -z "$missing" ] || { echo "model.sh: parts not staged:$missing of $parts"; return 3 2>/dev/null || exit 3; }
      python3 -c "import gguf" 2>/dev/null || { echo "no gguf package: carry .whl and source build.sh first"; return 4 2>/dev/null || exit 4; }
      for ((k = 1; k <= parts; k++)); do cat "$carry/$model.gguf.part$k"; done > "$carry/$model.gguf"
      echo "$sha  $carry/$model.gguf" | sha256sum --quiet -c - ||
        { echo "model.sh: $model.gguf differs from the one staged"; return 5 2>/dev/null || exit 5; }
      mkdir -p "$PRGE_MODEL" && tar xzf "$carry/$model.files.tgz" -C "$PRGE_MODEL"
      python3 - "$carry/$model.gguf" <<'PY'
import os
import sys
import prge.models.gguf_convert as g
g._export_tokenizer = lambda gguf, out: None  # the tokenizer files were converted here and carried
g.convert_gguf(sys.argv[1], os.environ["PRGE_MODEL"])
PY
    fi
    ls "$PRGE_MODEL" ;;
esac

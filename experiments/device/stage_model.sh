#!/usr/bin/env bash
# Makes, here, what the device scripts carry to the GPU machine (all git-ignored), from what
# scripts/install_deps.sh installed:
#   .device/a/smollm2.gguf.part1   SmolLM2-135M's GGUF, the first part
#   .device/a/model_files/         the converted model's files other than its weights (tokenizer, config)
#   .device/a/data.tgz             the paper tasks' data (experiments/device/stage_data.sh)
#   .device/a/fine_food/           Amazon Fine Food as train.csv / test.csv (precision.sh, multi_gpu.sh)
#   .device/b/smollm2.gguf.part2   the GGUF's rest
#   .whl/                          wheels the machine lacks (gguf, for the conversion there)
# then experiments/device/model.sh stage / join put the model together there. Every call also
# carries the working tree, and a call carries at most 64 MiB: the GGUF is split so that both calls
# carry the same, and this stops when they would not fit (run it again when the tree has grown). Usage (repository root, here): bash experiments/device/stage_model.sh
set -euo pipefail
limit=$((64 << 20)); headroom=$((1 << 20))
# Staged in .device/new first: a staging that does not fit leaves the previous one in place.
rm -rf .device/new && mkdir -p .device/new/a/model_files .device/new/a/fine_food .device/new/b .whl
read -r gguf model_dir < <(python3 - <<'PY' | tail -1  # converting first prints a line
from prge.models import REGISTERED, resolve_model
model_dir = resolve_model("smollm2-135m")
print(REGISTERED["smollm2-135m"].gguf(), model_dir)
PY
)
find "$model_dir" -maxdepth 1 -type f ! -name '*.safetensors' -exec cp {} .device/new/a/model_files/ \;
python3 - .device/new/a/fine_food <<'PY'
import csv, sys
from pathlib import Path

from prge.data.r_lazyload import read_lazyload_object
from prge.data.tasks import MODELDATA_DIR

for split, name in (("train.csv", "training_data"), ("test.csv", "testing_data")):
    frame = read_lazyload_object(MODELDATA_DIR, name)
    with open(Path(sys.argv[1]) / split, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "score"])
        writer.writerows(zip(frame["review"].tolist(), frame["score"].tolist()))
PY
python3 -m pip download -q --no-deps --dest .whl "gguf==$(python3 -c 'import importlib.metadata as m; print(m.version("gguf"))')"
bash experiments/device/stage_data.sh configs/sweeps/paper_accuracy.yaml .device/new/a/data.tgz > /dev/null
bytes() { du -sb "$@" | awk '{s += $1} END {print s}'; }
tree=$(git ls-files -z --cached --others --exclude-standard | python3 -c '
import os, sys
print(sum(os.path.getsize(p) for p in sys.stdin.read().split("\0") if os.path.isfile(p)))')
size=$(stat -c %s "$gguf")
first=$(( (size - $(bytes .device/new/a)) / 2 ))  # both calls carry the same, so both keep room for the tree to grow
if [ $((tree + $(bytes .device/new/a .whl) + first)) -gt $((limit - headroom)) ]; then
  echo "stage_model: the working tree ($((tree >> 20)) MiB) leaves too little room in two calls for the model" >&2
  rm -rf .device/new
  exit 1
fi
head -c "$first" "$gguf" > .device/new/a/smollm2.gguf.part1
tail -c +$((first + 1)) "$gguf" > .device/new/b/smollm2.gguf.part2
cmp <(cat .device/new/a/smollm2.gguf.part1 .device/new/b/smollm2.gguf.part2) "$gguf"
rm -rf .device/a .device/b && mv .device/new/a .device/new/b .device/ && rmdir .device/new
echo "call 1 carries $(( (tree + $(bytes .device/a .whl)) >> 20 )) MiB, call 2 $(( (tree + $(bytes .device/b .whl)) >> 20 )) MiB (the tree $((tree >> 20)) MiB in each)"

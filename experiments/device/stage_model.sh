#!/usr/bin/env bash
# Makes, here, what the device scripts carry to the GPU machine (all git-ignored), from what
# scripts/install_deps.sh installed, for one registered model (default: paths.env's DEFAULT_MODEL):
#   .device/MODEL/a/MODEL.gguf.part1     the model's GGUF, the first part
#   .device/MODEL/a/MODEL.files.tgz      the converted model's files other than its weights (tokenizer, config)
#   .device/MODEL/a/MODEL.parts          how many parts and the whole GGUF's sha256, then each part's
#                                        number, folder letter, size and sha256 (split_gguf.sh writes
#                                        it, model.sh join checks them)
#   .device/MODEL/a/data.tgz             the paper tasks' data (experiments/device/stage_data.sh)
#   .device/MODEL/a/fine_food/           Amazon Fine Food as train.csv / test.csv (precision.sh, multi_gpu.sh)
#   .device/MODEL/b/MODEL.gguf.part2     the GGUF's next part; c, d, ... as many as it takes
#   .whl/                                wheels the machine lacks (gguf, for the conversion there)
# then experiments/device/model.sh stage / join put the model together there: one call per part
# (SmolLM2-135M: 2, Gemma 3 270M: 5). Every call also carries the working tree, and a call carries
# at most 64 MiB: the parts are sized so that every call carries about the same, leaving the tree
# room to grow, and this stops when they would not fit (run it again when the tree has grown).
# Usage (repository root, here): bash experiments/device/stage_model.sh [MODEL]
set -euo pipefail
source experiments/device/paths.env
model=${1:-$DEFAULT_MODEL}
python3 -c "import sys; from prge.models import REGISTERED; sys.exit(sys.argv[1] not in REGISTERED and
  f'stage_model: {sys.argv[1]} is not a registered model ({\", \".join(REGISTERED)})')" "$model"
limit=$((64 << 20)); headroom=$((1 << 20))
# Staged in .device/new-MODEL first: a staging that does not fit leaves the previous one in place.
new=.device/new-$model
trap 'rm -rf "$new"' EXIT
rm -rf "$new" && mkdir -p "$new/a/fine_food" "$new/files" .whl
{ read -r gguf && read -r model_dir; } < <(python3 - "$model" <<'PY' | tail -2  # converting first prints a line
import sys
from prge.models import REGISTERED, resolve_model
model_dir = resolve_model(sys.argv[1])
print(REGISTERED[sys.argv[1]].gguf(), model_dir, sep="\n")
PY
)
# The tokenizer and config files (not the weights, a leftover temporary or the conversion marker:
# the device writes its own when its conversion is complete).
find "$model_dir" -maxdepth 1 -type f ! -name '*.safetensors' ! -name '*.tmp' ! -name prge_conversion.json \
  -exec cp {} "$new/files/" \;
tar czf "$new/a/$model.files.tgz" -C "$new/files" . && rm -rf "$new/files"
python3 - "$new/a/fine_food" <<'PY'
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
rm -f .whl/gguf-*.whl  # one version only: two stop the install there
python3 -m pip download -q --no-deps --dest .whl "gguf==$(python3 -c 'import importlib.metadata as m; print(m.version("gguf"))')"
bash experiments/device/stage_data.sh configs/sweeps/paper_accuracy.yaml "$new/a/data.tgz" > /dev/null
bytes() { du -sb "$@" | awk '{s += $1} END {print s}'; }
tree=$(git ls-files -z --cached --others --exclude-standard | python3 -c '
import os, sys
print(sum(os.path.getsize(p) for p in sys.stdin.read().split("\0") if os.path.isfile(p)))')
size=$(stat -c %s "$gguf")
extras=$(( $(bytes "$new/a") + 4096 ))  # part a's other files, and its .parts line
room=$(( limit - headroom - tree - $(bytes .whl) ))
[ "$room" -gt 0 ] || { echo "stage_model: the working tree ($((tree >> 20)) MiB) leaves no room in a call" >&2; exit 1; }
parts=$(( (size + extras + room - 1) / room ))
[ "$parts" -le 26 ] || { echo "stage_model: $model needs $parts calls (over 26): the tree is too large" >&2; exit 1; }
share=$(( (size + extras + parts - 1) / parts ))  # what each call carries besides the tree
if [ $(( share - extras )) -le 0 ]; then
  echo "stage_model: the working tree ($((tree >> 20)) MiB) leaves too little room in a call for the model" >&2
  exit 1
fi
bash experiments/device/split_gguf.sh "$gguf" "$model" "$new" $(( share - extras )) "$share"
rm -rf ".device/$model" && mv "$new" ".device/$model"
k=0
for part in .device/"$model"/*/; do
  part=${part%/}; k=$((k + 1))
  extra=""; [ "$k" -eq 1 ] && extra=.whl
  echo "call $k carries $part: $(( (tree + $(bytes "$part" $extra)) >> 20 )) MiB with the tree ($((tree >> 20)) MiB)"
done

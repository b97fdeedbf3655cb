#!/usr/bin/env bash
# Cuts a GGUF into the parts the device calls carry, one folder per call, and writes the manifest
# experiments/device/model.sh join checks them by (the one place its format is written):
#   DEST/a/MODEL.parts      line 1 "N SHA256" (how many parts, the whole file's sha256), then one
#                           line "K LETTER BYTES SHA256" for each part K carried in DEST/LETTER
#   DEST/LETTER/MODEL.gguf.partK
# Part 1 takes FIRST bytes (its folder carries other files too), every later part SHARE bytes, the
# last what is left. Usage: bash experiments/device/split_gguf.sh GGUF MODEL DEST FIRST SHARE
set -euo pipefail
[ $# -eq 5 ] || { echo "split_gguf: error: expected GGUF MODEL DEST FIRST SHARE, got $# argument(s)" >&2; exit 2; }
gguf=$1 model=$2 dest=$3 first=$4 share=$5
[ -f "$gguf" ] || { echo "split_gguf: error: $gguf: no such file" >&2; exit 2; }
[[ "$model" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] ||
  { echo "split_gguf: error: MODEL '$model': expected a registered model's name (letters, digits, . _ -)" >&2; exit 2; }
# Decimal byte counts below 10^15 (a leading zero is not octal here: 10# below).
[[ "$first" =~ ^[0-9]{1,15}$ && "$share" =~ ^[0-9]{1,15}$ ]] && first=$((10#$first)) share=$((10#$share)) &&
  [ "$first" -gt 0 ] && [ "$share" -gt 0 ] ||
  { echo "split_gguf: error: FIRST $first, SHARE $share: both must be positive byte counts" >&2; exit 2; }
size=$(stat -L -c %s "$gguf")  # -L: the file a link (the Hugging Face cache's) points to
parts=$(( size <= first ? 1 : 1 + (size - first + share - 1) / share ))
letters=(a b c d e f g h i j k l m n o p q r s t u v w x y z)
[ "$parts" -le ${#letters[@]} ] ||
  { echo "split_gguf: error: $gguf would take $parts parts (at most ${#letters[@]}): raise FIRST or SHARE" >&2; exit 1; }
mkdir -p "$dest/a"
manifest=$dest/a/$model.parts
echo "$parts $(sha256sum "$gguf" | cut -d' ' -f1)" > "$manifest"
offset=0
for ((k = 1; k <= parts; k++)); do
  dir=$dest/${letters[k - 1]}
  take=$share
  [ "$k" -eq 1 ] && take=$first
  mkdir -p "$dir"
  dd if="$gguf" of="$dir/$model.gguf.part$k" bs=1M iflag=skip_bytes,count_bytes skip="$offset" count="$take" status=none
  part_size=$(stat -c %s "$dir/$model.gguf.part$k")
  echo "$k ${letters[k - 1]} $part_size $(sha256sum "$dir/$model.gguf.part$k" | cut -d' ' -f1)" >> "$manifest"
  offset=$(( offset + part_size ))
done
[ "$offset" -eq "$size" ] || { echo "split_gguf: error: split $offset of $size bytes" >&2; exit 1; }

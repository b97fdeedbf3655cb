#!/usr/bin/env bash
# A registered model on the GPU machine (MODEL, default paths.env's DEFAULT_MODEL, SmolLM2-135M;
# experiments/device/stage_model.sh MODEL makes what it carries, here). The machine reaches no
# registry and a call carries at most 64 MiB, so the GGUF travels in parts, one call each: call 1
# carries .device/MODEL/a (the first part, task data, fine_food CSVs, the converted model's
# tokenizer files) and .whl, each later call the next part (.device/MODEL/b, c, ...), all within
# the machine's warm window; the parts are checked, joined and converted once, in /tmp.
#   MODEL=M bash experiments/device/model.sh stage     # every call: keep the part it carries
#                                                      # (and .device/stopped, if carried)
#   MODEL=M source experiments/device/model.sh join    # the last call, after stage: check, join,
#                                                      # convert; exports PRGE_MODEL, PRGE_FINE_FOOD
# The machine is given back after ~30 s idle: send each call as soon as the one before returns.
# Converting needs the gguf package: carry .whl in call 1 and source build.sh there (it installs
# it into /tmp/site, which join looks in). Source join without a pipe after
# it (`source ... | tail` runs in a subshell and exports nothing). Errors go to stderr with a
# nonzero status; sourcing leaves the caller's shell options as they were. PRGE_CARRY (default
# /tmp/prge-carry) is where the parts are kept.
(
  set -uo pipefail
  source experiments/device/paths.env
  model=${MODEL:-$DEFAULT_MODEL}
  carry=${PRGE_CARRY:-/tmp/prge-carry}
  fail() { echo "model.sh: $1" >&2; exit "$2"; }
  case "${1:-}" in
    stage)
      mkdir -p "$carry" || fail "cannot make $carry" 3
      found=0
      for part in .device/"$model"/*/; do
        [ -d "$part" ] || continue
        cp -r "$part". "$carry/" || fail "could not copy $part to $carry" 3
        found=1
      done
      # An earlier session's stopped runs (keep_runs.py's .device/stopped/), carried in a call of
      # their own when they and a part pass 64 MiB: kept in CARRY/stopped for paper_accuracy.sh.
      for archive in .device/stopped/*_stopped.tgz; do
        [ -f "$archive" ] || continue
        mkdir -p "$carry/stopped" && cp "$archive" "$carry/stopped/" || fail "could not copy $archive to $carry/stopped" 3
        found=1
      done
      [ "$found" = 1 ] || fail "no .device/$model/<part> or .device/stopped carried (bash experiments/device/stage_model.sh $model here)" 3
      ls "$carry" ;;
    join)
      target=$DEVICE_MODELS/$model
      [ -f "$target/prge_conversion.json" ] && exit 0  # converted by an earlier call on this machine
      if [ ! -f "$carry/$model.parts" ]; then
        staged=$(cd "$carry" 2>/dev/null && ls -- *.parts 2>/dev/null | sed 's/\.parts$//' | tr '\n' ' ')
        fail "$model is not staged on this machine (staged: ${staged:-nothing}; a cold machine: stage every part again)" 3
      fi
      # MODEL.parts, as experiments/device/split_gguf.sh writes it.
      { read -r parts sha && [[ "$parts" =~ ^[1-9][0-9]*$ && "$sha" =~ ^[0-9a-f]{64}$ ]]; } < "$carry/$model.parts" ||
        fail "$carry/$model.parts is damaged: stage every part again" 5
      while read -r k letter size part_sha; do
        file=$carry/$model.gguf.part$k
        [ -f "$file" ] || fail "part $k of $parts not staged: carry .device/$model/$letter and run stage" 3
        [ "$(stat -c %s "$file")" = "$size" ] && echo "$part_sha  $file" | sha256sum --quiet -c - 2>/dev/null ||
          fail "part $k of $parts differs from the one staged here: carry .device/$model/$letter again" 5
      done < <(tail -n +2 "$carry/$model.parts")
      # build.sh installed the carried wheels into /tmp/site in an earlier call: a new call's shell
      # does not have it on its path unless told, so look there too.
      if ! python3 -c "import gguf" 2>/dev/null && [ -d /tmp/site ]; then export PYTHONPATH=/tmp/site:${PYTHONPATH:-}; fi
      python3 -c "import gguf" 2>/dev/null || fail "no gguf package: carry .whl and source build.sh first" 4
      for ((k = 1; k <= parts; k++)); do cat "$carry/$model.gguf.part$k"; done > "$carry/$model.gguf" ||
        fail "could not join the parts (disk full?)" 5
      echo "$sha  $carry/$model.gguf" | sha256sum --quiet -c - 2>/dev/null || fail "$model.gguf differs from the one staged" 5
      # Converted beside the target and moved into place whole: a conversion cut short leaves no
      # directory that a later call would take for a converted model.
      rm -rf "$target.tmp" && mkdir -p "$target.tmp" && tar xzf "$carry/$model.files.tgz" -C "$target.tmp" ||
        fail "could not unpack $model.files.tgz" 5
      python3 - "$carry/$model.gguf" "$target.tmp" <<'PY' || fail "converting $model.gguf failed (above)" 6
import sys
import prge.models.gguf_convert as g
g._export_tokenizer = lambda gguf, out: None  # the tokenizer files were converted here and carried
g.convert_gguf(sys.argv[1], sys.argv[2])
PY
      rm -rf "$target" && mv "$target.tmp" "$target" || fail "could not move the converted model to $target" 6
      ls "$target" ;;
    *)
      fail "usage: MODEL=M bash experiments/device/model.sh stage | MODEL=M source experiments/device/model.sh join" 2 ;;
  esac
)
model_sh_status=$?
if [ "$model_sh_status" = 0 ] && [ "${1:-}" = join ]; then
  export PRGE_MODEL=$(source experiments/device/paths.env && echo "$DEVICE_MODELS/${MODEL:-$DEFAULT_MODEL}")
  export PRGE_FINE_FOOD=${PRGE_CARRY:-/tmp/prge-carry}/fine_food
fi
return "$model_sh_status" 2>/dev/null || exit "$model_sh_status"

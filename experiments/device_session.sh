#!/usr/bin/env bash
# One GPU lease in two calls. The machine has no registry access, so the SmolLM2 GGUF
# (94 MiB) travels in two carried halves: .devicecarry/a (first half, the pure-Python gguf
# reader, SST-2) and .devicecarry/b (second half, the converted tokenizer.json, Fine Food
# as CSV). The second call must follow within the machine's warm window.
#   bash experiments/device_session.sh bench OUT [bench_step args]   # carry .devicecarry/a
#   bash experiments/device_session.sh sweep OUT SWEEP [prge sweep args] # carry .devicecarry/b
set -uo pipefail
export PYTHONUNBUFFERED=1 PRGE_CACHE=/tmp/prge-cache PYTHONPATH="/tmp/prge-carry:${PYTHONPATH:-}"
stage=${1:?stage}; out=${2:?out dir}; shift 2
case "$stage" in
  bench)
    mkdir -p /tmp/prge-carry && cp -r .devicecarry/a/. /tmp/prge-carry/
    source experiments/device_build.sh
    python3 -c "import torch, prge; print(torch.__version__, torch.cuda.get_device_name(), 'prge cuda:', prge.cuda_built)"
    mkdir -p "$out" && python3 -X faulthandler experiments/gpu_checks.py --out "$out/gpu_checks.txt"
    python3 experiments/bench_step.py --out "$out" "$@" ;;
  sweep)
    sweep=${1:?sweep file}; shift
    [ -f /tmp/prge-carry/smollm2.gguf.part0 ] || { echo "machine went cold: run the bench stage first"; exit 3; }
    model=$PRGE_CACHE/models/smollm2-135m
    if [ ! -f "$model/tokenizer.json" ]; then
      cat /tmp/prge-carry/smollm2.gguf.part0 .devicecarry/b/smollm2.gguf.part1 > /tmp/prge-carry/smollm2.gguf
      mkdir -p "$model" && cp .devicecarry/b/tokenizer.json "$model/"
      python3 -c "
from prge.models.gguf_convert import convert_gguf
import prge.models.gguf_convert as g
g._export_tokenizer = lambda gguf, out: None  # transformers' GGUF tokenizer needs gguf's dist-info: carried instead
convert_gguf('/tmp/prge-carry/smollm2.gguf', '$model')"
    fi
    name=$(basename "$sweep" .yaml)
    prge sweep "$sweep" --no-progress --output-root "/tmp/runs/$name" --set model.device=cuda \
      --set model.name="$model" "$@"
    tar czf "$out/${name}_runs.tgz" --exclude='*.safetensors' -C /tmp/runs "$name"
    ls /tmp/runs/$name/*/summary.json | wc -l ;;
esac

#!/usr/bin/env bash
# GPU slice of the paper accuracy table (configs/sweeps/paper_accuracy_sst2_short.yaml).
# The machine has no registry access, so the SmolLM2 GGUF (94 MiB) travels in two carried
# halves (.devicecarry/a, .devicecarry/b) with the pure-Python gguf reader and SST-2.
#   bash experiments/device_paper_accuracy.sh build            # call 1 (carry .devicecarry/a)
#   bash experiments/device_paper_accuracy.sh run OUT_DIR      # calls 2+ (carry .devicecarry/b and /c); resumes
set -uo pipefail
export PYTHONUNBUFFERED=1 PRGE_CACHE=/tmp/prge-cache PYTHONPATH="$PWD/.devicecarry/a:${PYTHONPATH:-}"
case "$1" in
  build)
    mkdir -p /tmp/prge-carry && cp .devicecarry/a/smollm2.gguf.part0 /tmp/prge-carry/
    cp -r .devicecarry/a/gguf .devicecarry/a/data /tmp/prge-carry/
    source experiments/device_build.sh
    python3 -c "import prge; print('built', prge.__file__)" ;;
  run)
    out=${2:?out dir}
    export PYTHONPATH="/tmp/prge-carry:${PYTHONPATH}"
    model=$PRGE_CACHE/models/smollm2-135m
    if [ ! -f "$model/tokenizer.json" ]; then
      cat /tmp/prge-carry/smollm2.gguf.part0 .devicecarry/b/smollm2.gguf.part1 > /tmp/prge-carry/smollm2.gguf
      python3 -c "from prge.models.gguf_convert import convert_gguf; convert_gguf('/tmp/prge-carry/smollm2.gguf', '$model')" 2>&1 | tail -5
    fi
    # transformers' GGUF tokenizer export needs the gguf dist-info, which the carried reader
    # lacks: the tokenizer.json converted here (.devicecarry/c) travels instead.
    [ -f "$model/tokenizer.json" ] || cp .devicecarry/c/tokenizer.json "$model/"
    ls "$model"
    timeout "${SWEEP_SECONDS:-480}" prge sweep configs/sweeps/paper_accuracy_sst2_short.yaml --no-progress \
      --output-root /tmp/runs/paper_accuracy_sst2_short \
      --set model.device=cuda --set model.name="$model" --set data.data_dir=/tmp/prge-carry/data/sst2
    # summaries and metrics only: checkpoints (MeZO's is the whole model) stay on the machine
    tar czf "$out/paper_accuracy_sst2_short_runs.tgz" --exclude='*.safetensors' -C /tmp/runs paper_accuracy_sst2_short
    ls /tmp/runs/paper_accuracy_sst2_short/*/summary.json | wc -l ;;
esac

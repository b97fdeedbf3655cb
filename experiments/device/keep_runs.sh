#!/usr/bin/env bash
# Keeps what a device call of experiments/device/paper_accuracy.sh sent back: the archive is
# unpacked into runs/ (the sweep's output_root here, which `prge report
# configs/sweeps/paper_accuracy.yaml` reads), and every finished run's own files (config.yaml,
# summary.json, metrics.jsonl and its RUN.log; no weights) are copied into the committed
# experiments/results/paper_accuracy/runs/, from which the next device call's sweep starts (so a
# fresh checkout or a cold machine loses no finished run). Runs stopped part-way stay in the
# archive only; name it in RUNS_TGZ to resume them.
# Usage (repository root, here): bash experiments/device/keep_runs.sh ARCHIVE.tgz
set -euo pipefail
archive=${1:?paper_accuracy_runs.tgz from a device call}
kept=experiments/results/paper_accuracy/runs
mkdir -p runs "$kept" .device/runs
[ "$(realpath "$archive")" = "$(realpath -m .device/runs/paper_accuracy_runs.tgz)" ] || cp "$archive" .device/runs/paper_accuracy_runs.tgz
tar xzf "$archive" -C runs
count=0
for summary in runs/paper_accuracy/*/summary.json; do
  run=$(dirname "$summary"); name=$(basename "$run")
  mkdir -p "$kept/$name"
  cp "$run"/config.yaml "$run"/summary.json "$run"/metrics.jsonl "$kept/$name/"
  [ -f "$run.log" ] && cp "$run.log" "$kept/$name.log"
  count=$((count + 1))
done
echo "$count finished runs in $kept ($(du -sh "$kept" | cut -f1)); part-way: $(comm -23 \
  <(ls -d runs/paper_accuracy/*/ | xargs -n1 basename | sort) \
  <(ls "$kept" | grep -v '\.log$' | sort) | tr '\n' ' ')"

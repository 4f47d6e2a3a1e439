#!/usr/bin/env bash
# What contrastive search costs (#14): per-token time of contrastive search
# (alpha 0.6, k=5: five candidate rows per session per step, one pass over
# the weights) against greedy, at batch 1 and inside a 16-session batch,
# side by side in one run (sinkserve-decode-bench --contrastive 5 runs each
# batch size greedy then contrastive, round after round, and reports the
# median ratio). Two models: stories260K (the issue's target; 1 MB of
# weights that stay in cache, so every row costs its full FLOPs) and a
# 76M-parameter Llama shape with GQA (random weights, 305 MB of fp32 that
# batch-1 decode reads once per step, as real models do).
#   bash bench/contrastive/cost.sh > bench/results/contrastive-2026-12-03/cost.txt
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${BUILD:-build}
shared=${SHARED:-../shared}
big=${BIG_MODEL:-/tmp/bench-models/llama110m-gqa.gguf}
if [[ ! -f $big ]]; then
  mkdir -p "$(dirname "$big")"
  "$build/sinkserve-make-model" --dim 768 --hidden 2048 --layers 12 --heads 12 --kv-heads 4 --context 2048 \
    --vocab-from "$shared/models/stories260K/tok512.bin" --out "$big" >&2
fi
echo "# machine: $(nproc)-core $(lscpu | sed -n 's/^Model name: *//p'), no GPU"
echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ) commit: $(git rev-parse --short HEAD)"
run() {
  echo "\$ $*"
  "$@"
  echo
}
cache=(--policy sink_window --sinks 4 --window 252)
run "$build/sinkserve-decode-bench" --model "$shared/models/stories260K/stories260K.bin" \
  --tokenizer "$shared/models/stories260K/tok512.bin" --backend cpu --threads 1 --tokens 400 --repeats 5 \
  --batches 1,16 --contrastive 5 "${cache[@]}"
run "$build/sinkserve-decode-bench" --model "$big" --backend cpu --threads 2 --tokens 48 --repeats 3 \
  --batches 1,16 --contrastive 5 "${cache[@]}"

#!/usr/bin/env bash
# The main job: set up, build, and stream an endless story from stories260K
# with a 4-sink + 252-token window (StreamingLLM), then print the stats line.
# Uses ../shared/models when present; otherwise says how to fetch the model.
# TOKENS (default 2000) and PROMPT override the run.
set -euo pipefail
cd "$(dirname "$0")/.."
# The model: $SINKSERVE_MODELS, else ../shared/models, else ./models (scripts/fetch_model.sh).
models=${SINKSERVE_MODELS:-}
if [[ -z $models ]]; then
  for dir in ../shared/models models; do
    if [[ -f $dir/stories260K/stories260K.bin ]]; then
      models=$dir
      break
    fi
  done
fi
if [[ -z $models || ! -f $models/stories260K/stories260K.bin || ! -f $models/stories260K/tok512.bin ]]; then
  echo "no stories260K model found (looked in \$SINKSERVE_MODELS, ../shared/models, ./models); download it with: bash scripts/fetch_model.sh" >&2
  exit 1
fi
model=$models/stories260K/stories260K.bin
tokenizer=$models/stories260K/tok512.bin
bash scripts/setup.sh
bash scripts/build.sh
./build/sinkserve-generate --model "$model" --tokenizer "$tokenizer" \
  --prompt "${PROMPT:-Once upon a time}" --max-new-tokens "${TOKENS:-2000}" \
  --policy sink_window --sinks 4 --window 252 --temperature 0.8 --seed 7 --ignore-eos

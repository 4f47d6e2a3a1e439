#!/usr/bin/env bash
# The main job: set up, build, and stream an endless story from stories260K
# with a 4-sink + 252-token window (StreamingLLM), then print the stats line.
# Uses ../shared/models when present; otherwise says how to fetch the model.
set -euo pipefail
cd "$(dirname "$0")/.."
models=${SINKSERVE_MODELS:-../shared/models}
model=$models/stories260K/stories260K.bin
tokenizer=$models/stories260K/tok512.bin
if [[ ! -f $model || ! -f $tokenizer ]]; then
  echo "no model at $models/stories260K; fetch it with: mkdir -p models/stories260K && curl -L -o models/stories260K/stories260K.bin https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K/stories260K.bin && curl -L -o models/stories260K/tok512.bin https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K/tok512.bin && SINKSERVE_MODELS=models $0" >&2
  exit 1
fi
bash scripts/setup.sh
bash scripts/build.sh
./build/sinkserve-generate --model "$model" --tokenizer "$tokenizer" \
  --prompt "${PROMPT:-Once upon a time}" --max-new-tokens "${TOKENS:-2000}" \
  --policy sink_window --sinks 4 --window 252 --temperature 0.8 --seed 7 --ignore-eos

#!/usr/bin/env bash
# The main job: set up, build, and serve. sinkserve-server runs stories260K
# (or the GGUF file MODEL names) with a 4-sink + 252-token window per session,
# on gRPC 127.0.0.1:50051 and HTTP 127.0.0.1:8080: open
# http://127.0.0.1:8080/ to chat in the browser, or point any OpenAI client
# at http://127.0.0.1:8080/v1. Ctrl-C drains and stops it. LISTEN and
# HTTP_LISTEN move the ports; extra arguments go to the server.
# STORY=1 streams an endless story to stdout instead (TOKENS, default 2000,
# and PROMPT override it).
# stories260K comes from ../shared/models when present; otherwise the script
# says how to fetch it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n ${MODEL:-} ]]; then
  [[ -f $MODEL ]] || { echo "run.sh: MODEL=$MODEL is not a file" >&2; exit 1; }
  model_args=(--model "$MODEL")
else
  # stories260K: $SINKSERVE_MODELS, else ../shared/models, else ./models (scripts/fetch_model.sh).
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
  model_args=(--model "$models/stories260K/stories260K.bin" --tokenizer "$models/stories260K/tok512.bin")
fi
bash scripts/setup.sh
bash scripts/build.sh
if [[ -n ${STORY:-} ]]; then
  exec ./build/sinkserve-generate "${model_args[@]}" \
    --prompt "${PROMPT:-Once upon a time}" --max-new-tokens "${TOKENS:-2000}" \
    --policy sink_window --sinks 4 --window 252 --temperature 0.8 --seed 7 --ignore-eos
fi
http=${HTTP_LISTEN:-127.0.0.1:8080}
echo "run.sh: chat at http://$http/ (OpenAI API at http://$http/v1, gRPC at ${LISTEN:-127.0.0.1:50051}); Ctrl-C stops" >&2
exec ./build/sinkserve-server "${model_args[@]}" --backend cpu --policy sink_window --sinks 4 --window 252 \
  --listen "${LISTEN:-127.0.0.1:50051}" --http-listen "$http" "$@"

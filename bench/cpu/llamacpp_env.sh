#!/usr/bin/env bash
# The side-by-side benchmark models for llama.cpp comparisons: an ~86M-parameter
# random-weight Llama (dim 768, ffn 2048, 12 layers, 12 heads, 12 KV heads,
# stories260K's 512-token vocabulary, context 2048) written by our own
# sinkserve-make-model as F32, then quantized by llama.cpp's llama-quantize to
# Q8_0 and Q4_K_M, and a quick llama-bench decode run on each to show that
# llama.cpp loads them. By hand only: CI never runs this (it needs a llama.cpp
# build, which is never part of this repository).
#
# llama.cpp is ggml-org/llama.cpp at commit c392e5094deaf2d1a7c18683214f007fad3fe42b
# (the commit ../shared/models/MANIFEST.md names for the synthetic fixtures),
# configured with -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DCMAKE_BUILD_TYPE=Release;
# only its llama-quantize, llama-bench and llama-server targets are needed.
# Give the folder holding those binaries as LLAMA_CPP_BIN.
#
#   LLAMA_CPP_BIN=/tmp/llama.cpp/build/bin bash bench/cpu/llamacpp_env.sh
#
# Environment: LLAMA_CPP_BIN (default /tmp/llama.cpp/build/bin), SINKSERVE_BUILD
# (default build), OUT (default /tmp/bench-models), SHARED (default ../shared),
# SEED (default 1), THREADS (default 2).
set -euo pipefail
if [[ -n "${CI:-}" ]]; then
  echo "llamacpp_env.sh: not run under CI (it needs a llama.cpp build)"
  exit 0
fi
cd "$(dirname "$0")/../.."
bin=${LLAMA_CPP_BIN:-/tmp/llama.cpp/build/bin}
build=${SINKSERVE_BUILD:-build}
out=${OUT:-/tmp/bench-models}
shared=${SHARED:-../shared}
threads=${THREADS:-2}
for tool in "$bin/llama-quantize" "$bin/llama-bench" "$build/sinkserve-make-model"; do
  [[ -x "$tool" ]] || { echo "llamacpp_env.sh: missing $tool" >&2; exit 1; }
done
mkdir -p "$out"

f32=$out/llama85m-F32.gguf
"$build/sinkserve-make-model" --out "$f32" --dim 768 --hidden 2048 --layers 12 --heads 12 --kv-heads 12 \
  --vocab-from "$shared/models/stories260K/tok512.bin" --context 2048 --seed "${SEED:-1}" --type f32 \
  --name llama85m-random
for type in Q8_0 Q4_K_M; do
  "$bin/llama-quantize" "$f32" "$out/llama85m-$type.gguf" "$type" > "$out/llama85m-$type.quantize.log" 2>&1 ||
    { tail -20 "$out/llama85m-$type.quantize.log" >&2; exit 1; }
done
for type in F32 Q8_0 Q4_K_M; do
  "$bin/llama-bench" -m "$out/llama85m-$type.gguf" -t "$threads" -p 0 -n 16
done
ls -l "$out"/llama85m-*.gguf

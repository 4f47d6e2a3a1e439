#!/usr/bin/env bash
# Batch-1 greedy decode speed on stories260K against karpathy's llama2.c
# run.c (-O3, same machine, side by side, interleaved runs, medians), and
# aggregate decode throughput for 16 sessions in one Backend batch against
# batch 1. run.c is public; give its checkout as LLAMA2C_DIR. It is built in
# a temporary folder outside the repo and never committed.
#   LLAMA2C_DIR=/path/to/llama2.c bench/cpu/run_speed.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-bench/results/cpu}
models=${SINKSERVE_MODELS:-../shared/models}
runs=${RUNS:-21}
m=$models/stories260K
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "${LLAMA2C_DIR:?set LLAMA2C_DIR to a llama2.c checkout}/run.c" "$tmp/run.c"
gcc -O3 -o "$tmp/run" "$tmp/run.c" -lm

{
  echo "# machine: $(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  commit: $(git rev-parse --short HEAD)  llama2.c: ${LLAMA2C_COMMIT:-$(git -C "$LLAMA2C_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)}"
  echo "# run.c built with: gcc -O3 -o run run.c -lm"
  ours=(./build/sinkserve-generate --model "$m/stories260K.bin" --tokenizer "$m/tok512.bin" --backend cpu
        --prompt "Once upon a time" --max-new-tokens 507 --temperature 0 --policy dense --ignore-eos)
  theirs=("$tmp/run" "$m/stories260K.bin" -z "$m/tok512.bin" -t 0 -n 512 -i "Once upon a time")
  echo "\$ ${ours[*]}   (prints: N tokens in S s (X tok/s))"
  echo "\$ run ${theirs[*]:1}   (prints: achieved tok/s: X)"
  for ((i = 0; i < runs; i++)); do
    a=$("${ours[@]}" 2>&1 >/dev/null | sed -n 's/.*(\([0-9.]*\) tok\/s).*/\1/p')
    b=$("${theirs[@]}" 2>&1 | sed -n 's/.*achieved tok\/s: \([0-9.]*\).*/\1/p')
    echo "run $i sinkserve_tok_s=$a llama2c_tok_s=$b"
  done
  echo "\$ ./build/sinkserve-decode-bench --model $m/stories260K.bin --tokenizer $m/tok512.bin --backend cpu --batches 1,16 --tokens 1000 --repeats 9 --sinks 4 --window 252"
  ./build/sinkserve-decode-bench --model "$m/stories260K.bin" --tokenizer "$m/tok512.bin" --backend cpu \
    --batches 1,16 --tokens 1000 --repeats 9 --sinks 4 --window 252
} | tee "$out/raw.txt"
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ours_median=$(sed -n 's/^run [0-9]* sinkserve_tok_s=\([0-9.]*\) .*/\1/p' "$out/raw.txt" | median)
theirs_median=$(sed -n 's/^run [0-9]* .*llama2c_tok_s=\([0-9.]*\).*/\1/p' "$out/raw.txt" | median)
awk -v a="$ours_median" -v b="$theirs_median" 'BEGIN {
  printf "median over runs: sinkserve_tok_s=%.1f llama2c_tok_s=%.1f ratio=%.2fx (target >= 1.0x)\n", a, b, a / b }' \
  | tee -a "$out/raw.txt"

#!/usr/bin/env bash
# The paper's Figure 3 experiment on stories260K: teacher-forced perplexity
# over 100K tokens of TinyStories with a cache of 256 under each policy, the
# recompute baseline on the first 5K tokens, and the per-token time of
# sink_window against recompute at caches 256 and 512 (one run, side by side).
# Writes raw outputs, CSVs and a PNG under $OUT (default bench/results/ppl).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-bench/results/ppl}
models=${SINKSERVE_MODELS:-../shared/models}
text=${TEXT:-../shared/text/tinystories.txt}
tokens=${TOKENS:-100000}
mkdir -p "$out"
ppl=(./build/sinkserve-perplexity --model "$models/stories260K/stories260K.bin"
     --tokenizer "$models/stories260K/tok512.bin" --backend cpu --threads 1)
{
  echo "# machine: $(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  commit: $(git rev-parse --short HEAD)"
  run() {  # name, then policy flags
    local name=$1; shift
    echo "\$ ${ppl[*]} --text $text --max-tokens $tokens $* --csv $out/$name.csv"
    "${ppl[@]}" --text "$text" --max-tokens "$tokens" "$@" --csv "$out/$name.csv" 2>&1 || echo "(exit $?)"
  }
  run window_0+256 --policy window --window 256
  run sink_1+255 --policy sink_window --sinks 1 --window 255
  run sink_2+254 --policy sink_window --sinks 2 --window 254
  run sink_4+252 --policy sink_window --sinks 4 --window 252
  run dense --policy dense
  tokens=5000 run recompute_256 --policy recompute --window 256
  tokens=5000 run sink_4+252_first5k --policy sink_window --sinks 4 --window 252
  echo "# per-token time, sink_window against recompute, first 2000 tokens"
  for cache in 256 512; do
    tokens=2000 run speed_sink_$cache --policy sink_window --sinks 4 --window $((cache - 4))
    tokens=2000 run speed_recompute_$cache --policy recompute --window $cache
  done
} | tee "$out/raw.txt"
/usr/bin/python3 bench/ppl/plot.py "$out"

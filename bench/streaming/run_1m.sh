#!/usr/bin/env bash
# Endless streaming: 1,000,000 sampled (seeded) tokens from
# stories260K through sinkserve-generate with S=4 W=252 and --ignore-eos,
# reporting every 100K tokens. Checks the acceptance figures from the one run:
# peak RSS at 1M within 2% of the peak at 100K, 1M tokens in at most 10.5x
# the time of the first 100K, and every logit finite (generate stops with an
# error on a non-finite logit). Raw output goes to $OUT/raw.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-bench/results/streaming}
models=${SINKSERVE_MODELS:-../shared/models}
tokens=${TOKENS:-1000000}
mkdir -p "$out"
cmd=(./build/sinkserve-generate --model "$models/stories260K/stories260K.bin"
     --tokenizer "$models/stories260K/tok512.bin" --backend cpu --threads 1
     --prompt "Once upon a time" --max-new-tokens "$tokens" --policy sink_window --sinks 4 --window 252
     --temperature 0.8 --seed 1 --ignore-eos --report-every 100000)
{
  echo "# machine: $(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  commit: $(git rev-parse --short HEAD)"
  echo "\$ ${cmd[*]} > $out/text.txt"
  "${cmd[@]}" 2>&1 >"$out/text.txt"
} | tee "$out/raw.txt"
awk '/^report/ {
       for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
       if (v["tokens"] == 100000) { t1 = v["elapsed_s"]; r1 = v["peak_rss_kib"] }
       tn = v["elapsed_s"]; rn = v["peak_rss_kib"]; n = v["tokens"]
     }
     END {
       printf "tokens=%d time_ratio=%.3f (limit 10.5) rss_100k_kib=%d rss_end_kib=%d rss_growth=%.3f%% (limit 2%%)\n",
              n, tn / t1, r1, rn, 100 * (rn - r1) / r1
     }' "$out/raw.txt" | tee -a "$out/raw.txt"
# The generated text is large and only sampled; keep its head and tail.
{ head -c 2000 "$out/text.txt"; echo; echo "[...]"; tail -c 2000 "$out/text.txt"; } > "$out/text_excerpt.txt"
rm "$out/text.txt"

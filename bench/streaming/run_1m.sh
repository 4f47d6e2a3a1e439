#!/usr/bin/env bash
# Endless streaming: TOKENS (1,000,000) sampled (seeded) tokens through
# sinkserve-generate with S=SINKS (4) W=WINDOW (252) and --ignore-eos,
# reporting every REPORT (100,000) tokens. MODEL defaults to stories260K
# (its tokenizer beside it); a GGUF brings its own. Checks the acceptance
# figures from the one run: peak RSS at the end within 2% of the peak at the
# first report; per-token time flat: the median of the later half of the
# report intervals within 1.15x the median of the earlier half (medians, so
# one interval slowed by the rest of the machine does not decide it); and
# every logit finite (generate stops with an error on a
# non-finite logit). Raw output goes to $OUT/raw.txt.
#   bash bench/streaming/run_1m.sh                      # stories260K, 1M tokens
#   MODEL=../shared/models/synthetic/synth-mpt-F32.gguf TOKENS=100000 REPORT=10000 WINDOW=60 \
#     OUT=bench/results/streaming/mpt-alibi bash bench/streaming/run_1m.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-bench/results/streaming}
models=${SINKSERVE_MODELS:-../shared/models}
model=${MODEL:-$models/stories260K/stories260K.bin}
tokens=${TOKENS:-1000000}
report=${REPORT:-100000}
sinks=${SINKS:-4}
window=${WINDOW:-252}
mkdir -p "$out"
model_args=(--model "$model")
[[ $model == *.bin ]] && model_args+=(--tokenizer "${TOKENIZER:-$models/stories260K/tok512.bin}")
cmd=(./build/sinkserve-generate "${model_args[@]}" --backend cpu --threads 1
     --prompt "Once upon a time" --max-new-tokens "$tokens" --policy sink_window --sinks "$sinks" --window "$window"
     --temperature 0.8 --seed 1 --ignore-eos --report-every "$report")
{
  echo "# machine: $(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  commit: $(git rev-parse --short HEAD)"
  echo "\$ ${cmd[*]} > $out/text.txt"
  "${cmd[@]}" 2>&1 >"$out/text.txt"
} | tee "$out/raw.txt"
awk '/^report/ {
       for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
       if (v["tokens"] > 0) { ms[++k] = v["ms_per_token"]; if (k == 1) r1 = v["peak_rss_kib"] }
       rn = v["peak_rss_kib"]; n = v["tokens"]; tn = v["elapsed_s"]
     }
     function median(lo, hi,   m, i, j, t, a) {
       m = 0; for (i = lo; i <= hi; i++) a[++m] = ms[i]
       for (i = 2; i <= m; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
       return m % 2 ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
     }
     END {
       early = median(1, int(k / 2)); late = median(k - int(k / 2) + 1, k)
       printf "tokens=%d elapsed_s=%.3f ms_per_token_median_early=%.5f late=%.5f ratio=%.3f (limit 1.15) rss_first_report_kib=%d rss_end_kib=%d rss_growth=%.3f%% (limit 2%%)\n",
              n, tn, early, late, late / early, r1, rn, 100 * (rn - r1) / r1
     }' "$out/raw.txt" | tee -a "$out/raw.txt"
# The generated text is large and only sampled; keep its head and tail.
{ head -c 2000 "$out/text.txt"; echo; echo "[...]"; tail -c 2000 "$out/text.txt"; } > "$out/text_excerpt.txt"
rm "$out/text.txt"

#!/usr/bin/env bash
# sinkserve against llama.cpp on the same GGUF files, side by side in one run
# (issue #11's speed and memory items): batch-1 decode of 128 tokens against
# llama-bench tg128, a 512-token prefill against llama-bench pp512, and the
# peak RSS of a 128-token generation against the file's size and llama.cpp's
# own peak RSS (llama-bench, from GNU time), and the floor beside them: how
# fast two threads stream-read the file's bytes (sinkserve-read-bandwidth),
# since a batch-1 token reads every weight once. Rounds interleave the two
# engines and both files, so machine noise hits them alike; the summary
# takes medians.
#
# The models and the llama.cpp build come from bench/cpu/llamacpp_env.sh
# (never committed, never run by CI):
#   bash bench/cpu/run_real_models.sh > bench/results/cpu-real/raw.txt
# Env: MODELS (/tmp/bench-models), LLAMA_CPP_BIN (/tmp/llama.cpp/build/bin),
# BUILD (build), ROUNDS (5), THREADS (2), FILES ("Q8_0 Q4_K_M").
set -euo pipefail
cd "$(dirname "$0")/../.."
models=${MODELS:-/tmp/bench-models}
llama=${LLAMA_CPP_BIN:-/tmp/llama.cpp/build/bin}
build=${BUILD:-build}
rounds=${ROUNDS:-5}
threads=${THREADS:-2}
files=${FILES:-"Q8_0 Q4_K_M"}

echo "# machine: $(nproc)-core $(lscpu | sed -n 's/^Model name: *//p'), no GPU"
echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ) commit: $(git rev-parse --short HEAD)"
echo "# llama.cpp: c392e5094deaf2d1a7c18683214f007fad3fe42b (bench/cpu/llamacpp_env.sh), threads=$threads"
for f in $files; do echo "# file $f: $(stat -c %s "$models/llama85m-$f.gguf") bytes"; done
for ((r = 0; r < rounds; r++)); do
  for f in $files; do
    m=$models/llama85m-$f.gguf
    # The floor: how fast two threads stream-read this file through a
    # read-only mmap, as the CPU backend reads it (median of five reads).
    "$build/sinkserve-read-bandwidth" "$m" | sed -n 's/.* threads=2 .*gb_s=//p' | sort -n | sed -n 3p \
      | awk -v r="$r" -v f="$f" '{ printf "round=%d file=%s engine=memory test=read_gb_s value=%s\n", r, f, $1 }'
    # llama.cpp: one repetition of pp512 and tg128 per round; GNU time's
    # %M is its peak RSS in KiB.
    "$llama/llama-bench" -m "$m" -t "$threads" -p 512 -n 128 -r 1 -o csv 2>/dev/null > /tmp/llamabench.$$ \
      || { echo "llama-bench failed on $m" >&2; exit 1; }
    awk -F, -v r="$r" -v f="$f" 'NR > 1 { gsub(/"/, ""); for (i = 1; i <= NF; ++i) if (h[i] == "n_prompt") p = $i; else if (h[i] == "n_gen") g = $i; else if (h[i] == "avg_ts") t = $i;
           printf "round=%d file=%s engine=llama.cpp test=%s tok_s=%s\n", r, f, (p > 0 ? "pp" p : "tg" g), t }
         NR == 1 { gsub(/"/, ""); for (i = 1; i <= NF; ++i) h[i] = $i }' /tmp/llamabench.$$
    rss=$(/usr/bin/time -f %M "$llama/llama-bench" -m "$m" -t "$threads" -p 0 -n 128 -r 1 -o csv 2>&1 >/dev/null | tail -1)
    echo "round=$r file=$f engine=llama.cpp test=peak_rss_kib value=$rss"
    # sinkserve: the same two tests through one Backend, then the RSS of a
    # real 128-token generation (window 512: nothing is evicted in either).
    "$build/sinkserve-decode-bench" --model "$m" --backend cpu --threads "$threads" --batches 1 --tokens 128 \
        --repeats 1 --prefill 512 --chunk 512 --window 512 \
      | awk -v r="$r" -v f="$f" '/^batch=1 / { split($2, a, "="); printf "round=%d file=%s engine=sinkserve test=tg128 tok_s=%s\n", r, f, a[2] }
                                 /^prefill / { split($4, a, "="); printf "round=%d file=%s engine=sinkserve test=pp512 tok_s=%s\n", r, f, a[2] }'
    line=$("$build/sinkserve-generate" --model "$m" --backend cpu --threads "$threads" --prompt "Once upon a time" \
        --max-new-tokens 128 --ignore-eos --window 512 --temperature 0 2>&1 >/dev/null | tail -1)
    echo "round=$r file=$f engine=sinkserve test=peak_rss_kib value=$(sed -n 's/.*peak_rss_kib=\([0-9]*\).*/\1/p' <<< "$line")"
  done
done | tee /tmp/real_models.$$
rm -f /tmp/llamabench.$$
echo "# medians over $rounds rounds"
awk '{ split($2, f, "="); split($3, e, "="); split($4, t, "="); split($5, v, "=");
       k = f[2] " " t[2] " " e[2]; vals[k] = vals[k] " " v[2]; keys[k] = 1 }
     function median(list,   a, n, i, j, x) {
       n = split(list, a, " ")
       for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > x + 0; j--) a[j + 1] = a[j]; a[j + 1] = x }
       return a[int((n + 1) / 2)] }
     END { for (k in keys) { split(k, p, " "); printf "median file=%s test=%s engine=%s value=%s\n", p[1], p[2], p[3], median(vals[k]) } }' \
  /tmp/real_models.$$ | sort
rm -f /tmp/real_models.$$

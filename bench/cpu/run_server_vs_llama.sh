#!/usr/bin/env bash
# 16 concurrent sessions through sinkserve-server against llama-server -np 16
# on the same GGUF file, side by side in one run (issue #11): each session
# runs 3 turns of 128 new tokens (ignore_eos), sinkserve's through
# sinkserve-bench over gRPC, llama.cpp's through bench/cpu/llama_server_load.py
# over its HTTP API, each turn continuing the session's conversation. Rounds
# interleave the servers. Both servers get the same threads and a 512-token
# window per session (llama-server: -c 16 x 1024 so no slot shifts).
#   bash bench/cpu/run_server_vs_llama.sh > bench/results/cpu-real/server.txt
# Env: MODELS (/tmp/bench-models), LLAMA_CPP_BIN (/tmp/llama.cpp/build/bin),
# BUILD (build), ROUNDS (3), THREADS (2), FILES ("Q8_0 Q4_K_M"), SESSIONS (16).
set -euo pipefail
cd "$(dirname "$0")/../.."
models=${MODELS:-/tmp/bench-models}
llama=${LLAMA_CPP_BIN:-/tmp/llama.cpp/build/bin}
build=${BUILD:-build}
rounds=${ROUNDS:-3}
threads=${THREADS:-2}
files=${FILES:-"Q8_0 Q4_K_M"}
sessions=${SESSIONS:-16}
port=${PORT:-50591}
http_port=${HTTP_PORT:-8089}
pid=
cleanup() {
  if [[ -n $pid ]]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  pid=
}
trap cleanup EXIT

echo "# machine: $(nproc)-core $(lscpu | sed -n 's/^Model name: *//p'), no GPU; servers and clients share the cores"
echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ) commit: $(git rev-parse --short HEAD); threads=$threads sessions=$sessions x 3 turns x 128 tokens"
for ((r = 0; r < rounds; r++)); do
  for f in $files; do
    m=$models/llama85m-$f.gguf
    "$build/sinkserve-server" --model "$m" --backend cpu --threads "$threads" --listen "127.0.0.1:$port" \
        --window 512 2>/dev/null &
    pid=$!
    for _ in $(seq 100); do "$build/sinkserve-chat" --server "127.0.0.1:$port" --health --timeout 0.2 2>/dev/null && break; sleep 0.1; done
    "$build/sinkserve-bench" --server "127.0.0.1:$port" --sessions "$sessions" --turns 3 --max-new-tokens 128 \
      | awk -v r="$r" -v f="$f" -v n="$sessions" '$1 == n { printf "round=%d file=%s engine=sinkserve errors=%s tok_s=%s\n", r, f, $3, $6 }'
    cleanup
    "$llama/llama-server" -m "$m" -t "$threads" -np "$sessions" -c $((sessions * 1024)) --host 127.0.0.1 \
        --port "$http_port" > /dev/null 2>&1 &
    pid=$!
    for _ in $(seq 300); do curl -sf "http://127.0.0.1:$http_port/health" > /dev/null && break; sleep 0.1; done
    /usr/bin/python3 bench/cpu/llama_server_load.py --url "http://127.0.0.1:$http_port" --sessions "$sessions" \
        --turns 3 --max-new-tokens 128 \
      | awk -v r="$r" -v f="$f" '{ split($3, e, "="); split($6, t, "="); printf "round=%d file=%s engine=llama-server errors=%s tok_s=%s\n", r, f, e[2], t[2] }'
    cleanup
  done
done | tee /tmp/server_vs_llama.$$
echo "# medians over $rounds rounds"
awk '{ split($2, f, "="); split($3, e, "="); split($5, t, "="); k = f[2] " " e[2]; v[k] = v[k] " " t[2]; keys[k] = 1 }
     function median(list,   a, n, i, j, x) {
       n = split(list, a, " ")
       for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > x + 0; j--) a[j + 1] = a[j]; a[j + 1] = x }
       return a[int((n + 1) / 2)] }
     END { for (k in keys) { split(k, p, " "); printf "median file=%s engine=%s tok_s=%s\n", p[1], p[2], median(v[k]) } }' \
  /tmp/server_vs_llama.$$ | sort
rm -f /tmp/server_vs_llama.$$

#!/usr/bin/env bash
# The HTTP front door against gRPC on one server, side by side in one run
# (issue: HTTP, web, metrics, auth): sinkserve-bench drives SESSIONS
# concurrent sessions x TURNS turns x TOKENS new tokens through gRPC, then
# the same through HTTP (--http: streamed /v1/completions on keep-alive
# connections), alternating for ROUNDS rounds; the summary takes each
# door's median aggregate tok/s and their ratio. The server and the client
# share the machine's cores.
#   bash bench/server/http_vs_grpc.sh > bench/results/server/http-vs-grpc/raw.txt
# Env: BUILD (build), MODEL (stories260K .bin; or a GGUF), TOKENIZER (its
# tok512.bin when MODEL is a .bin), THREADS (2), SESSIONS (64), TURNS (3),
# TOKENS (256), ROUNDS (5), PORT (50593), HTTP_PORT (8093).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${BUILD:-build}
shared=${SHARED:-../shared}
model=${MODEL:-$shared/models/stories260K/stories260K.bin}
tokenizer=${TOKENIZER:-$shared/models/stories260K/tok512.bin}
threads=${THREADS:-2}
sessions=${SESSIONS:-64}
turns=${TURNS:-3}
tokens=${TOKENS:-256}
rounds=${ROUNDS:-5}
port=${PORT:-50593}
http_port=${HTTP_PORT:-8093}
model_args=(--model "$model")
[[ $model == *.bin ]] && model_args+=(--tokenizer "$tokenizer")

"$build/sinkserve-server" "${model_args[@]}" --backend cpu --threads "$threads" --listen "127.0.0.1:$port" \
  --http-listen "127.0.0.1:$http_port" --max-sessions-per-client 0 2> /tmp/http_vs_grpc.$$.log &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -f /tmp/http_vs_grpc.$$.*' EXIT
for _ in $(seq 100); do
  "$build/sinkserve-chat" --server "127.0.0.1:$port" --health --timeout 0.2 2>/dev/null && break
  sleep 0.1
done

echo "# machine: $(nproc)-core $(lscpu | sed -n 's/^Model name: *//p'), no GPU; server and client share the cores"
echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ) commit: $(git rev-parse --short HEAD)"
echo "# model: $model, server threads=$threads; $sessions sessions x $turns turns x $tokens tokens per phase"
for ((r = 0; r < rounds; r++)); do
  for door in grpc http; do
    extra=()
    [[ $door == http ]] && extra=(--http "127.0.0.1:$http_port")
    line=$("$build/sinkserve-bench" --server "127.0.0.1:$port" "${extra[@]}" --sessions "$sessions" --turns "$turns" \
             --max-new-tokens "$tokens" | awk -v n="$sessions" '$1 == n')
    echo "round=$r door=$door $line"
  done
done | tee /tmp/http_vs_grpc.$$.raw
echo "# columns after door: sessions turns errors tokens wall_s tok/s x_first ttft_p50 ttft_p99 itl_p50 itl_p99 (ms)"
awk '{ split($2, d, "="); tps[d[2]] = tps[d[2]] " " $8; errors += $5 }
     function median(list,   a, n, i, j, x) {
       n = split(list, a, " ")
       for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > x + 0; j--) a[j + 1] = a[j]; a[j + 1] = x }
       return a[int((n + 1) / 2)] }
     END { g = median(tps["grpc"]); h = median(tps["http"]);
           printf "median tok/s: grpc=%s http=%s http/grpc=%.3f errors=%d\n", g, h, h / g, errors }' \
  /tmp/http_vs_grpc.$$.raw

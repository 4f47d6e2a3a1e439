#!/usr/bin/env bash
# What the session store costs (#13), side by side in one run: three servers
# on one model, without a store, with SQLite (synchronous=FULL, a commit per
# turn's end, grouped) and with Redis, and sinkserve-bench driving SESSIONS
# concurrent sessions x TURNS turns x TOKENS tokens against each in turn,
# alternating for ROUNDS rounds. Only one server works at a time (the idle
# ones cost nothing). The summary takes each one's median aggregate tok/s
# and the ratio to no store; the servers' own histograms give the time a
# save takes (turn end to durable), scraped from /metrics at the end.
#   bash bench/server/store_cost.sh > bench/results/server/store-2026-12-02/cost.txt
# Env: BUILD (build), MODEL (stories260K .bin; or a GGUF), TOKENIZER, THREADS (2),
# SESSIONS (16), TURNS (8), TOKENS (64), ROUNDS (5), PORT (50610).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${BUILD:-build}
shared=${SHARED:-../shared}
model=${MODEL:-$shared/models/stories260K/stories260K.bin}
tokenizer=${TOKENIZER:-$shared/models/stories260K/tok512.bin}
threads=${THREADS:-2}
sessions=${SESSIONS:-16}
turns=${TURNS:-8}
tokens=${TOKENS:-64}
rounds=${ROUNDS:-5}
port=${PORT:-50610}
model_args=(--model "$model")
[[ $model == *.bin ]] && model_args+=(--tokenizer "$tokenizer")
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

redis-server --port $((port + 9)) --bind 127.0.0.1 --save "" --appendonly no --dir "$work" > /dev/null &
pids+=($!)
sleep 0.5
declare -A grpc_port http_port
i=0
for kind in none sqlite redis; do
  grpc_port[$kind]=$((port + i))
  http_port[$kind]=$((port + 3 + i))
  store=()
  [[ $kind == sqlite ]] && store=(--session-store "sqlite:$work/sqlite")
  [[ $kind == redis ]] && store=(--session-store "redis://127.0.0.1:$((port + 9))")
  "$build/sinkserve-server" "${model_args[@]}" --backend cpu --threads "$threads" \
    --listen "127.0.0.1:${grpc_port[$kind]}" --http-listen "127.0.0.1:${http_port[$kind]}" \
    --max-sessions-per-client 0 "${store[@]}" 2> "$work/$kind.log" &
  pids+=($!)
  for _ in $(seq 100); do
    "$build/sinkserve-chat" --server "127.0.0.1:${grpc_port[$kind]}" --health --timeout 0.2 2>/dev/null && break
    sleep 0.1
  done
  i=$((i + 1))
done

echo "# machine: $(nproc)-core $(lscpu | sed -n 's/^Model name: *//p'), no GPU; servers and client share the cores"
echo "# disk under $work: $(df -h "$work" | awk 'NR==2 {print $1}')"
echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ) commit: $(git rev-parse --short HEAD)"
echo "# model: $model, server threads=$threads; $sessions sessions x $turns turns x $tokens tokens per phase"
for ((r = 0; r < rounds; r++)); do
  for kind in none sqlite redis; do
    line=$("$build/sinkserve-bench" --server "127.0.0.1:${grpc_port[$kind]}" --sessions "$sessions" --turns "$turns" \
             --max-new-tokens "$tokens" | awk -v n="$sessions" '$1 == n')
    echo "round=$r store=$kind $line"
  done
done | tee "$work/raw"
echo "# columns after store: sessions turns errors tokens wall_s tok/s x_first ttft_p50 ttft_p99 itl_p50 itl_p99 (ms)"
awk '{ split($2, d, "="); tps[d[2]] = tps[d[2]] " " $8; errors += $5 }
     function median(list,   a, n, i, j, x) {
       n = split(list, a, " ")
       for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > x + 0; j--) a[j + 1] = a[j]; a[j + 1] = x }
       return a[int((n + 1) / 2)] }
     END { n = median(tps["none"]); s = median(tps["sqlite"]); r = median(tps["redis"]);
           printf "median tok/s: none=%s sqlite=%s (%.3f) redis=%s (%.3f) errors=%d\n", n, s, s / n, r, r / n, errors }' \
  "$work/raw"
for kind in sqlite redis; do
  echo "# $kind: sinkserve_session_store_seconds (save: turn end to durable; load)"
  curl -s "http://127.0.0.1:${http_port[$kind]}/metrics" | grep -E '^sinkserve_session_store_(seconds_(sum|count)|operations_total)'
done

#!/usr/bin/env bash
# Side-by-side load benchmark of several sinkserve-server builds: for each
# round, each server in turn is started, runs 1 then 16 concurrent sessions
# (3 turns x TOKENS new tokens each, one sinkserve-bench run), and is stopped.
# Rounds interleave the builds, so machine noise hits them alike.
#   bench/server/compare_servers.sh LABEL=path/to/sinkserve-server ...
# Env: ROUNDS (5), TOKENS (1024), THREADS (0 = all cores), BENCH (client
# binary, default build/sinkserve-bench), PORT (50581).
set -euo pipefail
cd "$(dirname "$0")/../.."
models=${SINKSERVE_SHARED_DIR:-../shared}/models/stories260K
rounds=${ROUNDS:-5}
tokens=${TOKENS:-1024}
threads=${THREADS:-0}
bench=${BENCH:-build/sinkserve-bench}
port=${PORT:-50581}
source bench/server/start_server.sh
trap stop_server EXIT

{
echo "# machine: $(nproc)-core CPU box ($(lscpu | sed -n 's/^Model name: *//p')), no GPU; server and client share the cores"
echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ) commit: $(git rev-parse --short HEAD)"
echo "# per server: --backend cpu --threads $threads, default cache (sink_window S=4 W=252)"
echo "# client: $bench --sessions 1,16 --turns 3 --max-new-tokens $tokens"
for ((r = 0; r < rounds; r++)); do
  for spec in "$@"; do
    label=${spec%%=*}
    binary=${spec#*=}
    start_server "$binary" "$port" "$threads" /dev/null
    "$bench" --server "127.0.0.1:$port" --sessions 1,16 --turns 3 --max-new-tokens "$tokens" \
      | awk -v r="$r" -v l="$label" '$1 == 1 || $1 == 16 { printf "round=%d server=%s sessions=%s errors=%s tok_s=%s ttft_p50_ms=%s itl_p50_ms=%s\n", r, l, $1, $3, $6, $8, $10 }'
    stop_server
  done
done
} | tee /dev/stderr | awk '
  /^round=/ { split($2, s, "="); split($3, n, "="); split($5, t, "="); v[s[2] " " n[2]] = v[s[2] " " n[2]] " " t[2]; names[s[2]] = 1 }
  function median(list,   a, k, i, j, x) {
    k = split(list, a, " ")
    for (i = 2; i <= k; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
    return a[int((k + 1) / 2)]
  }
  END {
    for (name in names) {
      one = median(v[name " 1"]); sixteen = median(v[name " 16"])
      printf "median server=%s sessions=1 tok_s=%.0f sessions=16 tok_s=%.0f ratio_16_vs_1=%.2fx\n", name, one, sixteen, sixteen / one
    }
  }' | sort

#!/usr/bin/env bash
# Load benchmark for sinkserve-server on the CPU backend with stories260K
# (issue 3, acceptance 4). Starts a server, runs sinkserve-bench twice, and
# writes raw JSON and table output to bench/results/server/:
#   1. 64 concurrent sessions x 3 turns x 64 tokens (must have zero errors)
#   2. 1 session then 16 sessions, same turns, in one run (aggregate tok/s ratio)
#   3. the same ratio with 256-token turns, and 4. with 2048-token turns
#      (longer phases, steadier figures)
# Usage: bench/server/run_server_bench.sh [BUILD_DIR] (default: build)
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
models=${SINKSERVE_SHARED_DIR:-../shared}/models/stories260K
out=bench/results/server
port=${PORT:-50561}
threads=${THREADS:-0}
mkdir -p "$out"

chat=$build/sinkserve-chat
source bench/server/start_server.sh
trap stop_server EXIT
start_server "$build/sinkserve-server" "$port" "$threads" "$out/server.log"

(
  echo "# machine: $(nproc)-core CPU dev box ($(lscpu | sed -n 's/^Model name: *//p')), no GPU, shared with other builds"
  echo "# server: --backend cpu --threads $threads (0 = all cores), defaults (sink_window S=4 W=252, chunk 64, step budget 512)"
  echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ) commit: $(git rev-parse --short HEAD)"
  set -x
  "$build/sinkserve-bench" --server "127.0.0.1:$port" --sessions 64 --turns 3 --max-new-tokens 64 \
    --label "64 sessions x 3 turns x 64 tokens, CPU stories260K" --json "$out/cpu_64x3x64.json"
  "$build/sinkserve-bench" --server "127.0.0.1:$port" --sessions 1,16 --turns 3 --max-new-tokens 64 \
    --label "1 vs 16 sessions, 3 turns x 64 tokens, CPU stories260K" --json "$out/cpu_1v16_64.json"
  "$build/sinkserve-bench" --server "127.0.0.1:$port" --sessions 1,16 --turns 3 --max-new-tokens 256 \
    --label "1 vs 16 sessions, 3 turns x 256 tokens, CPU stories260K" --json "$out/cpu_1v16_256.json"
  "$build/sinkserve-bench" --server "127.0.0.1:$port" --sessions 1,16 --turns 3 --max-new-tokens 2048 \
    --label "1 vs 16 sessions, 3 turns x 2048 tokens, CPU stories260K" --json "$out/cpu_1v16_2048.json"
) > "$out/bench.txt" 2>&1
cat "$out/bench.txt"

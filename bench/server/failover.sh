#!/usr/bin/env bash
# What a failover costs (#13): the failover case of
# tests/server/durable_server_test.py (Redis, two replicas, HAProxy from
# deploy/haproxy/haproxy.cfg, 16 clients on stories260K) ROUNDS times; each
# round prints how many conversations moved when a replica was killed
# between turns, their first turn's time after the failover against the same
# conversations' turn before it, and the running turns broken and retried
# when it was killed under them.
#   bash bench/server/failover.sh > bench/results/server/store-2026-12-02/failover.txt
# Env: BUILD (build), ROUNDS (5).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${BUILD:-build}
rounds=${ROUNDS:-5}
echo "# machine: $(nproc)-core $(lscpu | sed -n 's/^Model name: *//p'), no GPU; everything on loopback, sharing the cores"
echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ) commit: $(git rev-parse --short HEAD)"
for ((r = 0; r < rounds; r++)); do
  /usr/bin/python3 tests/server/durable_server_test.py --case failover --server-binary "$build/sinkserve-server" \
    --proto-dir proto --shared-dir "${SHARED:-../shared}" | sed "s/^/round=$r /"
done

#!/usr/bin/env bash
# The load test of #16 (acceptance 2): 64 well-behaved sessions
# (sinkserve-bench, from 127.0.0.1) keep their inter-token p99 within 2x of a
# quiet run while a hostile client (bench/server/hostile_client.py, from ::1,
# so a second client identity) opens maximum-size sessions, floods stop
# strings, half-opens 1,000 connections and drops streams. Both phases run
# against one server, quiet first, then under attack, then quiet again (so a
# server left worse by the attack shows). Every well-behaved turn must
# complete, and the server must still be running, exit 0 on SIGTERM, and
# print no sanitizer report (run it with an ASan build's server for that:
# BUILD=build-asan; its timings are not comparable).
#
# usage: bench/server/hostile_load.sh [OUT_DIR]   (default bench/results/server/hostile)
# The hostile client runs under `nice -n 19` (HOSTILE_PREFIX): it stands for
# a client on another machine, so its own Python work should not take the
# cores from the server and the benchmark client; the server's work for it
# (accepting, handshakes, opens, prefill, cancellation) still counts.
# Environment: BUILD (build), TURNS (8), TOKENS (256 per turn), THREADS (1), KINDS (all four:
# max-size,stops,half-open,drops), SERVER_FLAGS (more sinkserve-server flags).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${BUILD:-build}
out=${1:-bench/results/server/hostile}
shared=${SINKSERVE_SHARED_DIR:-../shared}
models=$shared/models/stories260K
turns=${TURNS:-8}
tokens=${TOKENS:-256}
threads=${THREADS:-1}
mkdir -p "$out"

log=$out/server.log
"$build/sinkserve-server" --model "$models/stories260K.bin" --tokenizer "$models/tok512.bin" --backend cpu \
  --threads "$threads" --listen "[::]:0" ${SERVER_FLAGS:-} 2> "$log" &
server=$!
hostile=
cleanup() {
  [[ -n $hostile ]] && kill -TERM "$hostile" 2>/dev/null || true
  kill -TERM "$server" 2>/dev/null || true
}
trap cleanup EXIT
port=
for _ in $(seq 100); do
  port=$(sed -n 's/.*listen=\S*:\([0-9]\+\).*/\1/p' "$log" | head -1)
  [[ -n $port ]] && break
  sleep 0.1
done
[[ -n $port ]] || { echo "hostile_load: the server did not start:"; cat "$log"; exit 1; }

bench() {  # label, json
  "$build/sinkserve-bench" --server "127.0.0.1:$port" --sessions 64 --turns "$turns" --max-new-tokens "$tokens" \
    --label "$1" --json "$2"
}

{
  echo "# machine: $(nproc)-core $(lscpu | sed -n 's/^Model name: *//p'), no GPU"
  echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ) commit: $(git rev-parse --short HEAD) build: $build"
  echo "# server: $(head -1 "$log")"
  echo "# well-behaved: sinkserve-bench, 64 sessions x $turns turns x $tokens tokens, from 127.0.0.1"
  echo "# hostile: bench/server/hostile_client.py from ::1 (max-size opens, stop-string floods, 1,000 half-open"
  echo "#          connections, streams dropped mid-turn), started 3 s before the attacked phase"
  echo
  echo "## quiet"
  bench "quiet" "$out/quiet.json"
  echo
  echo "## under attack"
  ${HOSTILE_PREFIX-nice -n 19} /usr/bin/python3 bench/server/hostile_client.py --port "$port" --proto-dir proto --half-open 1000 ${KINDS:+--kinds "$KINDS"} \
    > "$out/hostile.txt" 2>&1 &
  hostile=$!
  sleep 3
  bench "under attack" "$out/attacked.json"
  kill -TERM "$hostile"
  for _ in $(seq 300); do kill -0 "$hostile" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$hostile" 2>/dev/null && { kill -KILL "$hostile"; echo "hostile client did not stop in 30 s"; exit 1; }
  wait "$hostile" || { echo "hostile client failed:"; cat "$out/hostile.txt"; exit 1; }
  hostile=
  echo "hostile client counts: $(tail -1 "$out/hostile.txt")"
  echo
  echo "## quiet again"
  bench "quiet again" "$out/quiet_again.json"
} | tee "$out/bench.txt"

kill -0 "$server" || { echo "hostile_load: the server died"; exit 1; }
kill -TERM "$server"
rc=0
wait "$server" || rc=$?
server=
trap - EXIT
/usr/bin/python3 - "$out" "$rc" <<'EOF' | tee -a "$out/bench.txt"
import json, re, sys
out, rc = sys.argv[1], int(sys.argv[2])
def phase(name):
    return json.load(open(f"{out}/{name}.json"))["phases"][0]
quiet, attacked, again = phase("quiet"), phase("attacked"), phase("quiet_again")
log = open(f"{out}/server.log", errors="replace").read()
reports = len(re.findall(r"ERROR: (AddressSanitizer|LeakSanitizer|ThreadSanitizer)|runtime error:", log))
# The reference is the mean of the two quiet runs around the attack: on a
# shared 2-core VM the quiet p99 alone moves by up to 2x between back-to-back runs.
reference = (quiet["inter_token_ms"]["p99"] + again["inter_token_ms"]["p99"]) / 2
ratio = attacked["inter_token_ms"]["p99"] / reference
checks = {
    "inter-token p99 under attack within 2x of the quiet runs'": ratio <= 2.0,
    "every well-behaved turn completed": all(p["errors"] == 0 for p in (quiet, attacked, again)),
    "server exit code 0 on SIGTERM": rc == 0,
    "no sanitizer report in the server log": reports == 0,
}
print()
print(f"inter-token p99: quiet {quiet['inter_token_ms']['p99']:.3f} ms, quiet again {again['inter_token_ms']['p99']:.3f} ms "
      f"(mean {reference:.3f}), under attack {attacked['inter_token_ms']['p99']:.3f} ms: {ratio:.2f}x")
print(f"inter-token p50: quiet {quiet['inter_token_ms']['p50']:.3f} ms, under attack {attacked['inter_token_ms']['p50']:.3f} ms")
print(f"turns ok: {quiet['turns_ok']}, {attacked['turns_ok']}, {again['turns_ok']}; errors: "
      f"{quiet['errors']}, {attacked['errors']}, {again['errors']}")
for name, ok in checks.items():
    print(f"{'PASS' if ok else 'FAIL'}  {name}")
sys.exit(0 if all(checks.values()) else 1)
EOF

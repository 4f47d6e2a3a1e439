#!/usr/bin/env bash
# The StreamingLLM write-up's streaming demo as a benchmark (#14): the 80
# MT-Bench questions (160 user turns) replayed one after another into ONE
# endless session through sinkserve-server, greedy, at most 1,000 new tokens
# per turn, in the seed's three experiments:
#   attention_sinks  S=4, window 1020
#   transformers     dense (no eviction): stops with a clear error at the
#                    model's context
#   windowed         S=0, window 1024 (window-only)
# Every turn is "[INST] question [/INST]" sent raw (stories260K's GGUF has no
# chat template, so the first turn takes the same form). For each
# experiment: the streamed text (EXP.log), each turn's usage line
# (EXP.stats: tokens, time to first token, tok/s, cache and evicted tokens),
# and the server's RSS sampled every 0.2 s (EXP.rss). summarize.py turns them
# into the per-turn table, results.md.
#   bash bench/seed_demo/run.sh            # writes bench/results/seed_demo-<date>/
# Env: BUILD (build), SHARED (../shared), MODEL (stories260K.gguf, context 2048),
# OUT, PORT (50710), THREADS (2), EXPERIMENTS ("attention_sinks transformers windowed").
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${BUILD:-build}
shared=${SHARED:-../shared}
model=${MODEL:-$shared/models/stories260K/stories260K.gguf}
out=${OUT:-bench/results/seed_demo-$(date -u +%Y-%m-%d)}
port=${PORT:-50710}
threads=${THREADS:-2}
experiments=${EXPERIMENTS:-attention_sinks transformers windowed}
questions=$shared/text/mt_bench_questions.jsonl
mkdir -p "$out"

# One --prompt per user turn, in order.
mapfile -d '' prompts < <(/usr/bin/python3 -c '
import json, sys
for line in open(sys.argv[1]):
    for turn in json.loads(line)["turns"]:
        sys.stdout.write("--prompt\0[INST] " + turn + " [/INST]\0")' "$questions")

{
  echo "# machine: $(nproc)-core $(lscpu | sed -n 's/^Model name: *//p'), no GPU"
  echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ) commit: $(git rev-parse --short HEAD)"
  echo "# model: $model; $(( ${#prompts[@]} / 2 )) user turns from $questions"
} > "$out/run.txt"

server_pid=
sampler_pid=
cleanup() {
  [[ -n $sampler_pid ]] && kill "$sampler_pid" 2>/dev/null || true
  [[ -n $server_pid ]] && { kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; }
}
trap cleanup EXIT

for exp in $experiments; do
  case $exp in
    attention_sinks) cache=(--policy sink_window --sinks 4 --window 1020) ;;
    transformers) cache=(--policy dense) ;;
    windowed) cache=(--policy window --window 1024) ;;
    *) echo "unknown experiment $exp" >&2; exit 2 ;;
  esac
  # A fresh server per experiment, so its memory is this experiment's alone.
  "$build/sinkserve-server" --model "$model" --backend cpu --threads "$threads" --listen "127.0.0.1:$port" \
    --http-listen "127.0.0.1:$((port + 1))" 2> "$out/$exp.server.log" &
  server_pid=$!
  for _ in $(seq 100); do
    "$build/sinkserve-chat" --server "127.0.0.1:$port" --health --timeout 0.2 2>/dev/null && break
    sleep 0.1
  done
  ( while kill -0 "$server_pid" 2>/dev/null; do
      echo "$(date +%s.%N) $(awk '/^VmRSS/ {print $2}' "/proc/$server_pid/status" 2>/dev/null)"
      sleep 0.2
    done ) > "$out/$exp.rss" &
  sampler_pid=$!
  cmd=("$build/sinkserve-chat" --server "127.0.0.1:$port" "${cache[@]}" --raw --temperature 0
       --max-new-tokens 1000 --stats)
  echo "\$ ${cmd[*]} --prompt '[INST] <question> [/INST]' ... (160 prompts) > $exp.log 2> $exp.stats" >> "$out/run.txt"
  start=$(date +%s.%N)
  set +e
  "${cmd[@]}" "${prompts[@]}" > "$out/$exp.log" 2> "$out/$exp.stats"
  rc=$?
  set -e
  echo "$exp: exit $rc after $(echo "$(date +%s.%N) - $start" | bc) s" >> "$out/run.txt"
  kill "$sampler_pid" 2>/dev/null || true
  wait "$sampler_pid" 2>/dev/null || true
  sampler_pid=
  kill -TERM "$server_pid"
  wait "$server_pid" || true
  server_pid=
done
/usr/bin/python3 bench/seed_demo/summarize.py "$out" $experiments | tee "$out/results.md"

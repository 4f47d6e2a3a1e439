# Sourced by the server benchmarks. start_server BINARY PORT THREADS LOG
# starts a CPU sinkserve-server on stories260K ($models) in the background,
# sets $server to its pid, and returns once its health check (through
# $chat, default build/sinkserve-chat) answers, or after 10 s. stop_server
# ends it with SIGTERM and waits; it is a no-op when none runs.
start_server() {
  "$1" --model "$models/stories260K.bin" --tokenizer "$models/tok512.bin" \
    --backend cpu --threads "$3" --listen "127.0.0.1:$2" 2> "$4" &
  server=$!
  for _ in $(seq 100); do
    "${chat:-build/sinkserve-chat}" --server "127.0.0.1:$2" --health --timeout 0.2 2>/dev/null && return 0
    sleep 0.1
  done
}

stop_server() {
  [[ -n ${server:-} ]] || return 0
  kill -TERM "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  server=
}

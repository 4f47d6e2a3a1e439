#!/usr/bin/env bash
# Builds the CPU variant of the sinkserve image with podman, runs it, checks it
# through the published ports, and stops it. No image registry is needed: the
# base image is a Debian bookworm minbase made here with mmdebstrap from the
# machine's own apt mirror (/etc/apt/sources.list*), imported into podman.
#
#   SETUP_CONTAINER_TOOLS=1 bash scripts/setup.sh    # podman, mmdebstrap, runc, uidmap...
#   bash scripts/container.sh
#
# Steps:
#   a. base: mmdebstrap bookworm (minbase) -> podman import as $BASE_IMAGE
#      (kept: a rerun reuses the image, or the cached tarball in $CACHE_DIR)
#   b. image: podman build of ./Dockerfile with BUILD_IMAGE=RUNTIME_IMAGE=$BASE_IMAGE
#      and SINKSERVE_CUDA=OFF, tagged $IMAGE (localhost/sinkserve:cpu); the CUDA
#      variant is the Dockerfile's default and shares every step but the bases
#   c. run: ports on 127.0.0.1 ($GRPC_PORT -> 50051, $HTTP_PORT -> 8080), the
#      models directory read-only at /models, the image's own CMD; then gRPC
#      health and one chat turn through the published gRPC port (build/sinkserve-chat
#      when it runs here, else the image's client in a host-network container),
#      the image's HEALTHCHECK (podman healthcheck run), HTTP /health and one
#      /v1/chat/completions request with curl; then stop and remove it
#   d. fallback, when podman cannot run containers here (the probe run or a
#      build/run step fails with a runtime, namespace, cgroup, network or
#      storage error): the exact podman error is printed, then the image's root
#      filesystem (podman export) runs with the image's ENTRYPOINT, CMD and ENV
#      under `unshare --user --map-root-user --mount --pid` + chroot, with the
#      same checks; if no image could be built, a bookworm rootfs made by
#      mmdebstrap gets the binaries the way the Dockerfile builds them (setup.sh,
#      build.sh -DSINKSERVE_CUDA=OFF) and runs the Dockerfile's ENTRYPOINT/CMD.
#      In the fallback the server listens on the host's loopback directly (the
#      listen addresses of the CMD are rewritten to 127.0.0.1:$GRPC_PORT/$HTTP_PORT),
#      and runs as the namespace's root, not uid 10001 (only one uid is mapped).
#
# Which path ran on the 2-core Debian bookworm dev VM (2026-12-02): podman
# 4.3.1 (rootful, CNI bridge, ports published on 127.0.0.1), not the fallback,
# after two retries that the probe makes by itself, printing podman's errors:
#   1. "Error: crun: setrlimit `RLIMIT_NOFILE`: Operation not permitted: OCI
#      permission denied": the sandbox drops CAP_SYS_RESOURCE, so podman's
#      default RLIMIT_NOFILE (1048576) and RLIMIT_NPROC cannot be set; the
#      hard limits here can: --ulimit nofile=20000:20000 --ulimit nproc=32768:32768
#   2. "Error: OCI runtime error: crun: cgroups in hybrid mode not supported,
#      drop all controllers from cgroupv2": the VM mounts the cgroup v1
#      controllers plus a cgroup2 hierarchy holding hugetlb; runc accepts that:
#      --runtime runc (Debian's runc package)
# Those options go to every podman build/run/create the script makes.
# bench/results/container-2026-12-02/ has the run and its timings.
# The fallback paths can be forced: MODE=rootfs (podman builds, the exported
# rootfs runs under unshare), MODE=chroot-build (no podman at all).
#
# Environment: MODE=auto|podman|rootfs|chroot-build (auto: podman, falling back
# as above; podman: never fall back), IMAGE, BASE_IMAGE, MODELS (default
# ../shared/models), GRPC_PORT (15051), HTTP_PORT (18080), READY_TIMEOUT (180 s),
# JOBS (build jobs; default nproc), CONTEXT=worktree|head (head: build from a
# `git archive HEAD` snapshot instead of the working tree), CACHE_DIR
# (.cache/container), KEEP=1 leaves the container running, HOST_CLIENT=0 uses
# the image's sinkserve-chat even where build/sinkserve-chat runs.
# Exit 0 only if every check passed; each failure is one line "container: FAIL: ...".
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$PWD

MODE=${MODE:-auto}
IMAGE=${IMAGE:-localhost/sinkserve:cpu}
BASE_IMAGE=${BASE_IMAGE:-localhost/debian-bookworm-base:local}
MODELS=${MODELS:-${SINKSERVE_MODELS:-$root_dir/../shared/models}}
GRPC_PORT=${GRPC_PORT:-15051}
HTTP_PORT=${HTTP_PORT:-18080}
READY_TIMEOUT=${READY_TIMEOUT:-180}
JOBS=${JOBS:-$(nproc)}
CONTEXT=${CONTEXT:-worktree}
CACHE_DIR=${CACHE_DIR:-$root_dir/.cache/container}
NAME=${NAME:-sinkserve-container-check}
SUITE=bookworm

say() { echo "container: $*"; }
die() { echo "container: FAIL: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# The first line that looks like an error in a log, else its last line.
first_error() { grep -m1 -E '^Error|[Ee]rror:|FATAL|failed' "$1" || tail -n 1 "$1"; }
# Errors that mean "podman cannot run containers here", not "the build is broken".
is_sandbox_error() {
  grep -q -E 'OCI runtime|OCI permission|crun:|runc:|runc create|cgroup|setrlimit|rlimit|newuidmap|user namespace|unshare|overlay|fuse-overlayfs|netavark|CNI|iptables|slirp4netns|pasta|mount.*(permission denied|operation not permitted)' "$1"
}

case $MODE in auto | podman | rootfs | chroot-build) ;; *) die "MODE must be auto, podman, rootfs or chroot-build, got '$MODE'" ;; esac
case $CONTEXT in worktree | head) ;; *) die "CONTEXT must be worktree or head, got '$CONTEXT'" ;; esac

# ---------------------------------------------------------------- tools
missing=()
for tool in mmdebstrap unshare chroot curl ss /usr/bin/python3; do
  command -v "$tool" > /dev/null || missing+=("$tool")
done
[[ $MODE == chroot-build ]] || command -v podman > /dev/null || missing+=(podman)
((${#missing[@]} == 0)) || die "missing ${missing[*]}: run SETUP_CONTAINER_TOOLS=1 bash scripts/setup.sh"
[[ -f $MODELS/stories260K/stories260K.bin && -f $MODELS/stories260K/tok512.bin ]] \
  || die "no stories260K in $MODELS (set MODELS, or run scripts/fetch_model.sh)"
MODELS=$(cd "$MODELS" && pwd)
for port in "$GRPC_PORT" "$HTTP_PORT"; do
  if ss -Hltn "sport = :$port" | grep -q .; then die "port $port is already in use on this machine (set GRPC_PORT/HTTP_PORT)"; fi
done
mkdir -p "$CACHE_DIR"
t_start=$(now)
say "machine: $(nproc) cores, $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r); mode $MODE"

# ---------------------------------------------------------------- cleanup
container_started=0 server_pid="" context_tmp=""
cleanup() {
  local rc=$?
  if ((container_started)) && [[ ${KEEP:-0} != 1 ]]; then
    podman rm -f -t 10 "$NAME" > /dev/null 2>&1 || true
  fi
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2> /dev/null; then
    kill -TERM "$(server_leaf)" 2> /dev/null || true
  fi
  [[ -z $context_tmp ]] || rm -rf "$context_tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- a. base
# The host's apt sources for $SUITE (one-line and deb822), as one-line entries.
apt_sources() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    sed -n -E 's/^[[:space:]]*(deb[[:space:]].*)$/\1/p' "$f" | grep -E "[[:space:]]$SUITE(-[a-z]+)?([[:space:]]|\$)" || true
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    awk -v suite="$SUITE" '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && enabled != "no" && uris != "" && suites ~ suite) {
          n = split(uris, u, " "); m = split(suites, s, " ")
          opt = (signed ~ /^\// ? "[signed-by=" signed "] " : "")
          for (i = 1; i <= n; i++) for (j = 1; j <= m; j++) printf "deb %s%s %s %s\n", opt, u[i], s[j], comps
        }
        types = uris = suites = comps = signed = enabled = ""
      }
      /^[[:space:]]*#/ { next }
      /^[[:space:]]*$/ { flush(); next }
      /^[[:space:]]/ { next }   # continuation lines (an inline key)
      {
        key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^[[:space:]]+/, "")
        if (key == "types") types = $0; else if (key == "uris") uris = $0
        else if (key == "suites") suites = $0; else if (key == "components") comps = $0
        else if (key == "signed-by") signed = $0; else if (key == "enabled") enabled = tolower($0)
      }
      END { flush() }' "$f"
  done
}

# mmdebstrap arguments: the host's mirror and the apt options it relies on
# (a snapshot mirror needs Check-Valid-Until false; a proxy), written into the
# base too, so apt inside the image build sees the mirror the host sees.
mmdebstrap_args=()
mmdebstrap_setup() {
  local -a sources
  mapfile -t sources < <(apt_sources)
  ((${#sources[@]})) || die "no $SUITE entries in /etc/apt/sources.list* to build the base from"
  say "base: apt sources from this machine: ${sources[*]}"
  mmdebstrap_args=(--variant=minbase --format=tar)
  [[ $(id -u) == 0 ]] && mmdebstrap_args+=(--mode=root) || mmdebstrap_args+=(--mode=unshare)
  local key value
  for key in Acquire::Check-Valid-Until Acquire::Check-Date Acquire::http::Proxy Acquire::https::Proxy; do
    value=$(apt-config dump "$key" 2> /dev/null | sed -n -E "s/^$key \"(.*)\";\$/\\1/p" | head -n 1)
    [[ -z $value ]] || mmdebstrap_args+=("--aptopt=$key \"$value\"")
  done
  mmdebstrap_sources=("${sources[@]}")
}

make_base() {
  local tarball=$CACHE_DIR/$SUITE-minbase.tar t0
  if podman image exists "$BASE_IMAGE"; then
    say "base: $BASE_IMAGE exists, reused (podman rmi it to rebuild)"
    t_base=0
    return
  fi
  t0=$(now)
  if [[ -s $tarball ]]; then
    say "base: reusing the cached $tarball"
  else
    mmdebstrap_setup
    say "base: mmdebstrap $SUITE minbase -> $tarball"
    if ! nice -n 15 mmdebstrap "${mmdebstrap_args[@]}" "$SUITE" "$tarball.tmp" "${mmdebstrap_sources[@]}" \
      > "$CACHE_DIR/mmdebstrap.log" 2>&1; then
      rm -f "$tarball.tmp"
      tail -n 15 "$CACHE_DIR/mmdebstrap.log" | sed 's/^/  | /'
      die "mmdebstrap failed: $(first_error "$CACHE_DIR/mmdebstrap.log") (log: $CACHE_DIR/mmdebstrap.log)"
    fi
    mv "$tarball.tmp" "$tarball"
  fi
  podman import --change 'CMD ["/bin/bash"]' --message "mmdebstrap $SUITE minbase from this machine's mirror" \
    "$tarball" "$BASE_IMAGE" > "$CACHE_DIR/import.log" 2>&1 \
    || die "podman import failed: $(first_error "$CACHE_DIR/import.log")"
  t_base=$(since "$t0")
  say "base: $BASE_IMAGE imported ($(podman image inspect --format '{{.Size}}' "$BASE_IMAGE" | awk '{ printf "%.0f MB", $1 / 1e6 }')) in ${t_base} s"
}

# ---------------------------------------------------------------- probe
# podman's own options for this machine: start with none; on a known sandbox
# error, print it exactly and retry with the option that avoids it.
podman_opts=()
fallback_reason=""
probe_podman() {
  local attempt log=$CACHE_DIR/probe.log
  for attempt in 1 2 3 4; do
    if podman run --rm "${podman_opts[@]}" "$BASE_IMAGE" /bin/true > "$log" 2>&1; then
      say "probe: podman runs containers here${podman_opts[*]:+ with ${podman_opts[*]}}"
      return 0
    fi
    say "probe: podman run failed: $(first_error "$log")"
    if grep -q 'hybrid mode not supported' "$log" && [[ " ${podman_opts[*]} " != *" --runtime "* ]]; then
      command -v runc > /dev/null || break
      podman_opts+=(--runtime runc)
      say "probe: retrying with --runtime runc (runc accepts cgroup v1 + a cgroup2 mount)"
    elif grep -q -E 'rlimit' "$log" && [[ " ${podman_opts[*]} " != *" --ulimit "* ]]; then
      # podman raises its own limits where it may; the container gets those.
      local nofile nproc
      nofile=$(ulimit -Hn)
      nproc=$(podman_nproc)
      podman_opts+=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")
      say "probe: retrying with --ulimit nofile=$nofile:$nofile --ulimit nproc=$nproc:$nproc (no CAP_SYS_RESOURCE here)"
    else
      break
    fi
  done
  fallback_reason="podman cannot run containers here: $(first_error "$log")"
  return 1
}
# The RLIMIT_NPROC podman's runtime inherits (podman lowers its own to at most
# 32768 where it cannot raise it), so the container asks for no more than that.
podman_nproc() {
  local hard
  hard=$(ulimit -Hu)
  [[ $hard == unlimited ]] && hard=32768
  ((hard > 32768)) && hard=32768
  echo "$hard"
}

# ---------------------------------------------------------------- b. image
context=""
build_context() {
  if [[ $CONTEXT == head ]]; then
    context_tmp=$(mktemp -d "$CACHE_DIR/context.XXXXXX")
    git archive HEAD | tar -x -C "$context_tmp"
    context=$context_tmp
    say "build: context is a snapshot of HEAD $(git rev-parse --short HEAD)"
  else
    context=$root_dir
    say "build: context is the working tree (.dockerignore applies)"
  fi
}

build_image() {
  local log=$CACHE_DIR/build.log t0 cached
  build_context
  t0=$(now)
  say "build: podman build -> $IMAGE (BUILD_IMAGE=RUNTIME_IMAGE=$BASE_IMAGE, SINKSERVE_CUDA=OFF, JOBS=$JOBS); log $log"
  if ! nice -n 15 podman build "${podman_opts[@]}" --pull=never --format docker --layers \
    --build-arg "BUILD_IMAGE=$BASE_IMAGE" --build-arg "RUNTIME_IMAGE=$BASE_IMAGE" \
    --build-arg SINKSERVE_CUDA=OFF --build-arg "JOBS=$JOBS" \
    -f "$context/Dockerfile" -t "$IMAGE" "$context" > "$log" 2>&1; then
    tail -n 20 "$log" | sed 's/^/  | /'
    if is_sandbox_error "$log"; then
      fallback_reason="podman build cannot run here: $(first_error "$log")"
      return 1
    fi
    die "podman build failed: $(first_error "$log") (log: $log)"
  fi
  t_build=$(since "$t0")
  cached=$(grep -c 'Using cache' "$log" || true)
  say "build: $cached steps from the layer cache"
  say "build: $IMAGE $(podman image inspect --format '{{.Id}}' "$IMAGE" | cut -c1-12), $(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{ printf "%.0f MB", $1 / 1e6 }'), built in ${t_build} s"
}

# ---------------------------------------------------------------- c. checks
# The gRPC client: the host build's when it runs here, else the image's.
client=()
pick_client() {
  if [[ ${HOST_CLIENT:-1} != 0 && -x build/sinkserve-chat ]] && build/sinkserve-chat --help > /dev/null 2>&1; then
    client=("$root_dir/build/sinkserve-chat")
    say "checks: gRPC client is the host build's build/sinkserve-chat"
  elif [[ $1 == podman ]]; then
    client=(podman run --rm "${podman_opts[@]}" --network host --no-healthcheck --entrypoint sinkserve-chat "$IMAGE")
    say "checks: gRPC client is the image's sinkserve-chat in a host-network container (no runnable build/sinkserve-chat, or HOST_CLIENT=0)"
  else
    client=(in_rootfs "$1" sinkserve-chat)
    say "checks: gRPC client is the rootfs's sinkserve-chat (no runnable build/sinkserve-chat, or HOST_CLIENT=0)"
  fi
}

# Polls until gRPC health says SERVING; $1 is a command that is true while the
# server is still running.
wait_ready() {
  local alive=$1 t0=$2 deadline=$((SECONDS + READY_TIMEOUT))
  while ((SECONDS < deadline)); do
    $alive || return 2
    if curl -fsS -m 2 "http://127.0.0.1:$HTTP_PORT/health" > /dev/null 2>&1 \
      && "${client[@]}" --server "127.0.0.1:$GRPC_PORT" --health --timeout 3 > /dev/null 2>&1; then
      t_ready=$(since "$t0")
      return 0
    fi
    sleep 0.5
  done
  return 1
}

run_checks() {
  local out
  out=$("${client[@]}" --server "127.0.0.1:$GRPC_PORT" --health --timeout 3 2>&1) \
    || die "gRPC health through 127.0.0.1:$GRPC_PORT: $out"
  say "check: gRPC health through 127.0.0.1:$GRPC_PORT: SERVING"
  out=$("${client[@]}" --server "127.0.0.1:$GRPC_PORT" --raw --prompt "Once upon a time" \
    --max-new-tokens 32 --seed 1 --stats 2>&1) || die "gRPC chat turn through 127.0.0.1:$GRPC_PORT: $(echo "$out" | tail -n 1)"
  [[ $out == *[[:alnum:]]* ]] || die "gRPC chat turn through 127.0.0.1:$GRPC_PORT printed no text"
  say "check: gRPC chat turn through 127.0.0.1:$GRPC_PORT:"
  echo "$out" | sed 's/^/  | /'
  out=$(curl -fsS -m 10 "http://127.0.0.1:$HTTP_PORT/health" 2>&1) || die "HTTP GET /health on 127.0.0.1:$HTTP_PORT: $out"
  say "check: HTTP /health on 127.0.0.1:$HTTP_PORT: $out"
  out=$(curl -sS -m 60 -w '\n%{http_code}' -H 'Content-Type: application/json' \
    -d '{"model":"stories260K","messages":[{"role":"user","content":"Once upon a time"}],"max_tokens":32,"seed":1}' \
    "http://127.0.0.1:$HTTP_PORT/v1/chat/completions" 2>&1) || die "HTTP /v1/chat/completions on 127.0.0.1:$HTTP_PORT: $out"
  local code=${out##*$'\n'} body=${out%$'\n'*}
  [[ $code == 200 ]] || die "HTTP /v1/chat/completions answered $code: $body"
  /usr/bin/python3 -c '
import json, sys
r = json.loads(sys.argv[1])
text = r["choices"][0]["message"]["content"]
assert text.strip(), "empty content"
print("container: check: HTTP /v1/chat/completions: 200, %d completion tokens: %r" % (r["usage"]["completion_tokens"], text))
' "$body" || die "HTTP /v1/chat/completions: unexpected body: $body"
}

# ---------------------------------------------------------------- c. podman run
container_alive() { [[ $(podman inspect -f '{{.State.Running}}' "$NAME" 2> /dev/null) == true ]]; }

run_podman() {
  local log=$CACHE_DIR/run.log t0
  podman rm -f -t 0 "$NAME" > /dev/null 2>&1 || true
  t0=$(now)
  say "run: podman run $IMAGE (its CMD), 127.0.0.1:$GRPC_PORT->50051, 127.0.0.1:$HTTP_PORT->8080, $MODELS:/models:ro, read-only"
  if ! podman run -d --name "$NAME" "${podman_opts[@]}" \
    -p "127.0.0.1:$GRPC_PORT:50051" -p "127.0.0.1:$HTTP_PORT:8080" \
    -v "$MODELS:/models:ro" --read-only --security-opt no-new-privileges \
    "$IMAGE" > "$log" 2>&1; then
    podman rm -f -t 0 "$NAME" > /dev/null 2>&1 || true
    if is_sandbox_error "$log"; then
      fallback_reason="podman run cannot run here: $(first_error "$log")"
      return 1
    fi
    die "podman run failed: $(first_error "$log")"
  fi
  container_started=1
  pick_client podman
  if ! wait_ready container_alive "$t0"; then
    podman logs "$NAME" 2>&1 | tail -n 15 | sed 's/^/  | /'
    container_alive || die "the container exited before it was healthy: $(podman logs "$NAME" 2>&1 | tail -n 1)"
    die "not healthy within ${READY_TIMEOUT} s of podman run"
  fi
  say "run: healthy ${t_ready} s after podman run (user $(podman exec "$NAME" id -u), LD_LIBRARY_PATH=$(podman exec "$NAME" printenv LD_LIBRARY_PATH))"
  run_checks
  local out
  # Without systemd podman runs no healthcheck timers (it logs that at podman
  # run); the check runs on demand.
  out=$(podman healthcheck run "$NAME" 2>&1) || die "the image's HEALTHCHECK (podman healthcheck run): ${out:-unhealthy}"
  say "check: the image's HEALTHCHECK (podman healthcheck run): healthy"
  if [[ ${KEEP:-0} == 1 ]]; then
    say "run: KEEP=1, left $NAME running"
    return 0
  fi
  t0=$(now)
  podman stop -t 15 "$NAME" > /dev/null 2>&1 || die "podman stop $NAME failed"
  local code
  code=$(podman inspect -f '{{.State.ExitCode}}' "$NAME")
  podman logs "$NAME" 2>&1 | tail -n 4 | sed 's/^/  | /'
  podman rm "$NAME" > /dev/null 2>&1 || die "podman rm $NAME failed"
  container_started=0
  [[ $code == 0 ]] || die "the server exited $code on SIGTERM (podman stop), not 0"
  say "run: stopped (SIGTERM, exit 0) in $(since "$t0") s and removed"
}

# ---------------------------------------------------------------- d. fallback
# Runs a command in a root filesystem: a user namespace (the caller is its
# root), a mount and a pid namespace, /proc, /dev, a /tmp and the models
# (read-only) mounted, then chroot. The network is the host's.
in_rootfs() {
  local rootfs=$1
  shift
  unshare --user --map-root-user --mount --pid --fork --kill-child=SIGTERM -- /bin/sh -c '
    set -e
    r=$1 models=$2; shift 2
    mount --rbind "$r" "$r"
    mkdir -p "$r/proc" "$r/dev" "$r/tmp" "$r/models"
    mount -t proc proc "$r/proc"
    mount --rbind /dev "$r/dev"
    mount -t tmpfs tmpfs "$r/tmp"
    mount --bind "$models" "$r/models"
    mount -o remount,bind,ro "$r/models"
    exec chroot "$r" /usr/bin/env -i "$@"' sh "$rootfs" "$MODELS" "${rootfs_env[@]}" "$@"
}

# ENTRYPOINT + CMD and ENV: from the image, or parsed from the Dockerfile.
rootfs_env=() entry=()
read_image_config() {
  mapfile -t rootfs_env < <(podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$IMAGE" | sed '/^$/d')
  mapfile -t entry < <(podman image inspect --format '{{json .Config.Entrypoint}}{{"\n"}}{{json .Config.Cmd}}' "$IMAGE" \
    | /usr/bin/python3 -c 'import json, sys; [print(a) for line in sys.stdin for a in (json.loads(line) or [])]')
}
read_dockerfile_config() {
  rootfs_env=("PATH=/opt/sinkserve/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" "HOME=/")
  mapfile -t entry < <(/usr/bin/python3 - "$1" << 'EOF'
import json, re, sys
text = re.sub(r"\\\n", " ", open(sys.argv[1]).read())
cfg = {}
for line in text.splitlines():
    m = re.match(r"\s*(ENTRYPOINT|CMD)\s+(\[.*\])\s*$", line)
    if m: cfg[m.group(1)] = json.loads(m.group(2))  # the last one wins: the runtime stage's
for a in cfg.get("ENTRYPOINT", []) + cfg.get("CMD", []): print(a)
EOF
  )
}

# The container's listen addresses become the host loopback ports.
rewrite_listen() {
  printf '%s\n' "$@" | sed -E -e "s/^(--[a-z-]+=)?[^=]*:50051\$/\\1127.0.0.1:$GRPC_PORT/" \
    -e "s/^(--[a-z-]+=)?[^=]*:8080\$/\\1127.0.0.1:$HTTP_PORT/"
}

# A bookworm rootfs with the binaries built as the Dockerfile builds them.
chroot_build_rootfs() {
  local rootfs=$CACHE_DIR/rootfs-chroot-build t0
  [[ $(id -u) == 0 ]] || die "MODE=chroot-build needs root (mmdebstrap root mode and chroot)"
  build_context
  mmdebstrap_setup
  mmdebstrap_args=("${mmdebstrap_args[@]/--format=tar/--format=directory}")
  rm -rf "$rootfs"
  t0=$(now)
  say "fallback: mmdebstrap $SUITE minbase -> $rootfs, then setup.sh + build.sh -DSINKSERVE_CUDA=OFF inside (log $CACHE_DIR/chroot-build.log)"
  if ! nice -n 15 mmdebstrap "${mmdebstrap_args[@]}" \
    --customize-hook="mkdir -p \"\$1/src\" && tar -C '$context' --exclude=./.git --exclude='./build*' --exclude=./.cache -c . | tar -C \"\$1/src\" -x" \
    --customize-hook="chroot \"\$1\" /bin/bash -c 'cd /src && SETUP_TEST_TOOLS=0 bash scripts/setup.sh && JOBS=$JOBS bash scripts/build.sh -DSINKSERVE_CUDA=OFF -DSINKSERVE_MARCH=x86-64-v3 && mkdir -p /opt/sinkserve/bin /models && cp build/sinkserve-server build/sinkserve-chat build/sinkserve-bench build/sinkserve-generate build/sinkserve-tokenize /opt/sinkserve/bin/ && ! ldd /opt/sinkserve/bin/* | grep \"not found\"'" \
    "$SUITE" "$rootfs" "${mmdebstrap_sources[@]}" > "$CACHE_DIR/chroot-build.log" 2>&1; then
    tail -n 20 "$CACHE_DIR/chroot-build.log" | sed 's/^/  | /'
    die "the chroot build failed: $(first_error "$CACHE_DIR/chroot-build.log")"
  fi
  t_build=$(since "$t0")
  say "fallback: rootfs built in ${t_build} s"
  read_dockerfile_config "$context/Dockerfile"
  fallback_rootfs=$rootfs
}

export_image_rootfs() {
  local rootfs=$CACHE_DIR/rootfs-image id
  rm -rf "$rootfs"
  mkdir -p "$rootfs"
  id=$(podman create "${podman_opts[@]}" --no-healthcheck "$IMAGE" 2> "$CACHE_DIR/export.log") \
    || die "podman create (for export) failed: $(first_error "$CACHE_DIR/export.log")"
  podman export "$id" | tar -C "$rootfs" -x || die "podman export of $IMAGE failed"
  podman rm "$id" > /dev/null
  read_image_config
  say "fallback: $IMAGE's root filesystem exported to $rootfs"
  fallback_rootfs=$rootfs
}

server_alive() { kill -0 "$server_pid" 2> /dev/null; }
# The server: the last of the single chain of processes under the background
# job (the job's subshell, unshare, the server).
server_leaf() {
  local pid=$server_pid next
  while next=$(ps -o pid= --ppid "$pid" | head -n 1 | tr -d ' ') && [[ -n $next ]]; do pid=$next; done
  echo "$pid"
}

run_fallback() {
  local rootfs=$fallback_rootfs log=$CACHE_DIR/fallback-server.log t0 child
  local -a argv
  mapfile -t argv < <(rewrite_listen "${entry[@]}")
  ((${#argv[@]})) || die "no ENTRYPOINT/CMD to run"
  say "fallback: unshare --user --map-root-user --mount --pid + chroot $rootfs: ${argv[*]}"
  t0=$(now)
  in_rootfs "$rootfs" "${argv[@]}" > "$log" 2>&1 &
  server_pid=$!
  pick_client "$rootfs"
  if ! wait_ready server_alive "$t0"; then
    tail -n 15 "$log" | sed 's/^/  | /'
    server_alive || die "the server exited before it was healthy: $(tail -n 1 "$log")"
    die "not healthy within ${READY_TIMEOUT} s of the start"
  fi
  say "fallback: healthy ${t_ready} s after the start"
  run_checks
  # SIGTERM to the server (pid 1 of its namespace; unshare itself ignores
  # SIGTERM), as podman stop would, and 15 s for it to drain and exit.
  t0=$(now)
  child=$(server_leaf)
  [[ $child != "$server_pid" ]] || die "no server process under $server_pid to stop"
  kill -TERM "$child"
  local code=0 deadline=$((SECONDS + 15))
  while kill -0 "$child" 2> /dev/null && ((SECONDS < deadline)); do sleep 0.2; done
  kill -0 "$child" 2> /dev/null && die "the server did not exit within 15 s of SIGTERM"
  wait "$server_pid" || code=$?
  server_pid=""
  tail -n 4 "$log" | sed 's/^/  | /'
  [[ $code == 0 ]] || die "the server exited $code on SIGTERM, not 0"
  say "fallback: stopped (SIGTERM, exit 0) in $(since "$t0") s"
}

# ---------------------------------------------------------------- main
t_base=n/a t_build=n/a t_ready=n/a path=""
if [[ $MODE == chroot-build ]]; then
  chroot_build_rootfs
  run_fallback
  path="fallback: mmdebstrap rootfs + chroot build, run under unshare (MODE=chroot-build)"
else
  make_base
  if ! probe_podman; then
    [[ $MODE == auto ]] || die "$fallback_reason"
    say "fallback: $fallback_reason"
    chroot_build_rootfs
    run_fallback
    path="fallback: mmdebstrap rootfs + chroot build, run under unshare ($fallback_reason)"
  elif ! build_image; then
    [[ $MODE == auto ]] || die "$fallback_reason"
    say "fallback: $fallback_reason"
    chroot_build_rootfs
    run_fallback
    path="fallback: mmdebstrap rootfs + chroot build, run under unshare ($fallback_reason)"
  elif [[ $MODE == rootfs ]]; then
    export_image_rootfs
    run_fallback
    path="fallback: the podman-built image's rootfs run under unshare (MODE=rootfs)"
  elif ! run_podman; then
    [[ $MODE == auto ]] || die "$fallback_reason"
    say "fallback: $fallback_reason"
    export_image_rootfs
    run_fallback
    path="fallback: the podman-built image's rootfs run under unshare ($fallback_reason)"
  else
    path="podman${podman_opts[*]:+ (${podman_opts[*]})}"
  fi
fi
say "PASS via $path"
say "timings: base ${t_base} s, image build ${t_build} s, start to healthy ${t_ready} s, total $(since "$t_start") s"

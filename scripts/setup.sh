#!/usr/bin/env bash
# Installs everything sinkserve needs to build and test, from Debian packages.
# Idempotent: packages already present are skipped by apt. Run as root (or with sudo).
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libabsl-dev libprotobuf-dev protobuf-compiler
  libgrpc++-dev protobuf-compiler-grpc
  libgtest-dev libgmock-dev libpcre2-dev
  libboost-dev nlohmann-json3-dev prometheus-cpp-dev libssl-dev openssl curl
  libsqlite3-dev libhiredis-dev
  clang libclang-rt-dev
  python3 python3-grpcio python3-protobuf python3-numpy python3-matplotlib python3-yaml
)

# What only the tests need (a browser for the web page's test, promtool for
# the metrics test, Redis and HAProxy for the durability and replica tests);
# an image that only builds and serves sets SETUP_TEST_TOOLS=0.
if [[ ${SETUP_TEST_TOOLS:-1} != 0 ]]; then
  packages+=(chromium prometheus redis-server haproxy)
fi

# What only scripts/container.sh needs (podman, and runc where crun refuses
# the cgroup layout; mmdebstrap for a bookworm base from the mirror; uidmap
# for a user-namespace fallback); off by default so CI does not pay for it:
# SETUP_CONTAINER_TOOLS=1 bash scripts/setup.sh
if [[ ${SETUP_CONTAINER_TOOLS:-0} == 1 ]]; then
  packages+=(podman runc mmdebstrap uidmap slirp4netns fuse-overlayfs)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  sudo_cmd=()
  [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The Node test clients (the official openai client, playwright-core), at the
# versions tests/http/package-lock.json pins.
# (Node 20 and npm come with the machine, not from Debian.)
http_tests=$(cd "$(dirname "$0")/.." && pwd)/tests/http
if [[ ${SETUP_TEST_TOOLS:-1} == 0 || ! -f $http_tests/package-lock.json ]]; then
  :
elif ! command -v npm > /dev/null; then
  echo "setup: npm is missing; the Node tests of the HTTP front door will skip" >&2
elif [[ ! -d $http_tests/node_modules/openai || $http_tests/package-lock.json -nt $http_tests/node_modules ]]; then
  (cd "$http_tests" && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "setup: all packages present"

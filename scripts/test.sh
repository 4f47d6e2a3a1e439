#!/usr/bin/env bash
# The whole test suite: set up, build, then every CTest test; then the
# sanitizer builds and short fuzz runs (scripts/sanitize.sh; SANITIZE=0 skips
# them for a quick local run). GPU tests skip with a message on a machine
# without a CUDA device; tests that need ../shared data skip with a message
# when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh "$@"
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j "${JOBS:-$(nproc)}"
if [[ ${SANITIZE:-1} != 0 ]]; then
  bash scripts/sanitize.sh
fi

#!/usr/bin/env bash
# Configures and builds sinkserve into ./build (or $BUILD_DIR). Extra
# arguments go to CMake, e.g. -DSINKSERVE_CUDA=OFF or -DSINKSERVE_CUDA_ARCHS=90.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
jobs=${JOBS:-$(nproc)}
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build "$build_dir" -j "$jobs"

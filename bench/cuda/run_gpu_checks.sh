#!/usr/bin/env bash
# Builds the CUDA backend for sm_90 on a GPU machine, runs every GPU test and
# the decode benchmark, and keeps the raw output.
#
#   DEB_DIR=/path/to/debs PREFIX=/tmp/sinkserve-prefix bench/cuda/run_gpu_checks.sh [--quick]
#
# From a dev box with the device tool: `bench/cuda/fetch_debs.sh .gpu-debs`
# (the folder is in .git/info/exclude), then run
# `DEB_DIR=.gpu-debs bench/cuda/run_gpu_checks.sh` with carry [".gpu-debs"].
# Checked on the CPU-only dev box: it configures against the unpacked prefix,
# builds cuda_tests and the benchmark, and every GPU test skips.
#
# The GPU machine has nvcc, cmake and ninja but not the abseil / gtest / PCRE2
# development packages the engine and its tests need; the gRPC server is not
# built there (-DSINKSERVE_SERVER=OFF). DEB_DIR holds those .deb files with
# their runtime libraries (bench/cuda/fetch_debs.sh DIR downloads them on a
# Debian machine); they are unpacked with `dpkg -x` into PREFIX and CMake is
# pointed there. Without DEB_DIR the system packages are used.
#
# Raw logs go to $OUT (when set, e.g. by the device runner) and to
# bench/results/cuda-<date>/: gpu.txt, configure.log, build.log,
# cuda_tests.log (+ .xml), sanitizer_{memcheck,racecheck}.log, decode_bench.log.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=${RESULTS:-$ROOT/bench/results/cuda-$STAMP}
mkdir -p "$RESULTS"
JOBS=${JOBS:-$(nproc)}
BUILD=${BUILD:-$ROOT/build-gpu}
BENCH_ARGS=("$@")

{ nvidia-smi || true; nvcc --version; cmake --version | head -1; } >"$RESULTS/gpu.txt" 2>&1

CMAKE_ARGS=()
if [[ -n "${DEB_DIR:-}" ]]; then
  PREFIX=${PREFIX:-$ROOT/.gpu-prefix}
  mkdir -p "$PREFIX"
  for deb in "$DEB_DIR"/*.deb; do dpkg -x "$deb" "$PREFIX"; done
  MULTIARCH=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
  LIBDIR=$PREFIX/usr/lib/$MULTIARCH
  export PATH=$PREFIX/usr/bin:$PATH
  export LD_LIBRARY_PATH=$LIBDIR:$PREFIX/usr/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export CPLUS_INCLUDE_PATH=$PREFIX/usr/include${CPLUS_INCLUDE_PATH:+:$CPLUS_INCLUDE_PATH}
  export LIBRARY_PATH=$LIBDIR${LIBRARY_PATH:+:$LIBRARY_PATH}
  export PKG_CONFIG_PATH=$LIBDIR/pkgconfig:$PREFIX/usr/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
  CMAKE_ARGS+=("-DCMAKE_PREFIX_PATH=$PREFIX/usr;$LIBDIR/cmake"
               "-DCMAKE_BUILD_RPATH=$LIBDIR")
fi

# CMake 3.25 does not know nvcc's C++20 flag; newer CMake ignores this.
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DSINKSERVE_CUDA=ON -DSINKSERVE_CUDA_ARCHS=90 -DSINKSERVE_SERVER=OFF \
  -DCMAKE_CUDA20_STANDARD_COMPILE_OPTION=-std=c++20 "${CMAKE_ARGS[@]}" >"$RESULTS/configure.log" 2>&1 ||
  { tail -40 "$RESULTS/configure.log"; exit 1; }
ninja -C "$BUILD" -j"$JOBS" cuda_tests sinkserve-cuda-decode-bench >"$RESULTS/build.log" 2>&1 ||
  { tail -40 "$RESULTS/build.log"; exit 1; }

if [[ -z "${SINKSERVE_SHARED_DIR:-}" ]]; then
  if [[ -d "$ROOT/shared/models" ]]; then export SINKSERVE_SHARED_DIR=$ROOT/shared; fi
fi

status=0
"$BUILD/tests/cuda_tests" --gtest_output=xml:"$RESULTS/cuda_tests.xml" >"$RESULTS/cuda_tests.log" 2>&1 || status=$?
tail -25 "$RESULTS/cuda_tests.log"
# The kernel tests again under compute-sanitizer: an index one past a buffer
# inside a larger allocation (a RoPE row, a ring slot) reads garbage without
# faulting; memcheck reports it, racecheck the shared-memory reuse.
if command -v compute-sanitizer >/dev/null; then
  for tool in memcheck racecheck; do
    compute-sanitizer --tool "$tool" --error-exitcode 3 "$BUILD/tests/cuda_tests" \
      --gtest_filter='Cases/AttentionTest.*' >"$RESULTS/sanitizer_$tool.log" 2>&1 || status=$?
    tail -3 "$RESULTS/sanitizer_$tool.log"
  done
else
  echo "compute-sanitizer not found: sanitizer runs skipped" | tee "$RESULTS/sanitizer_skipped.log"
fi
"$BUILD/bench/cuda/sinkserve-cuda-decode-bench" "${BENCH_ARGS[@]}" >"$RESULTS/decode_bench.log" 2>&1 || status=$?
cat "$RESULTS/decode_bench.log"

if [[ -n "${OUT:-}" ]]; then cp -r "$RESULTS" "$OUT/"; fi
echo "raw output in $RESULTS"
exit $status

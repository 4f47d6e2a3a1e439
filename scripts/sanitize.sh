#!/usr/bin/env bash
# The sanitizer half of CI (scripts/test.sh runs it after the main suite):
#   1. an ASan+UBSan clang build of the CPU tree (UB is fatal) and every CTest
#      test in it;
#   2. a short run of every libFuzzer target, from the seeds under fuzz/
#      (plus generated parser seeds and the model files in ../shared);
#   3. a TSan build of the engine, thread pool, pump and server tests, run
#      with tests/sanitizers/tsan.supp (Debian's gRPC, Abseil and Protobuf are
#      not instrumented, so races TSan reports inside them are not ours).
# Any sanitizer report, crash or fuzzer finding fails the script.
#
# usage: bash scripts/sanitize.sh [asan|fuzz|tsan]...   (default: all three)
# Environment: ASAN_BUILD_DIR (build-asan), TSAN_BUILD_DIR (build-tsan),
# FUZZ_SECONDS (30 per target), JOBS (nproc), SINKSERVE_SHARED_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

asan_dir=${ASAN_BUILD_DIR:-build-asan}
tsan_dir=${TSAN_BUILD_DIR:-build-tsan}
fuzz_seconds=${FUZZ_SECONDS:-30}
jobs=${JOBS:-$(nproc)}
shared=$(realpath -m "${SINKSERVE_SHARED_DIR:-../shared}")
steps=("$@")
((${#steps[@]})) || steps=(asan fuzz tsan)

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

section() { printf '\n== sanitize: %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

configure_clang() {  # dir, extra CMake arguments
  local dir=$1
  shift
  CC=clang CXX=clang++ cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSINKSERVE_CUDA=OFF "$@" > /dev/null
}

# The ASan+UBSan tree, which also holds the fuzz targets.
build_asan() {  # CMake --build arguments (default: everything)
  configure_clang "$asan_dir" -DSINKSERVE_SANITIZE=address,undefined -DSINKSERVE_FUZZ=ON
  cmake --build "$asan_dir" -j "$jobs" "$@"
}

asan() {
  section "ASan+UBSan build"
  build_asan
  section "ASan+UBSan tests"
  ctest --test-dir "$asan_dir" --output-on-failure -j "$jobs"
}

fuzz() {
  section "fuzz targets, ${fuzz_seconds} s each"
  [[ -x $asan_dir/fuzz/request_fuzz ]] || build_asan --target fuzz_targets
  local work
  work=$(realpath -m "$asan_dir/fuzz-run")
  rm -rf "$work"
  mkdir -p "$work"
  /usr/bin/python3 fuzz/make_seeds.py "$work/seeds" > /dev/null
  for f in stories260K/stories260K.gguf vocab-tests/ggml-vocab-llama-spm.gguf synthetic/synth-qwen2-Q4_K_M.gguf; do
    [[ -f $shared/models/$f ]] && cp "$shared/models/$f" "$work/seeds/gguf/"
  done
  local target seeds status=0
  for target in gguf llama2c tokenizer stream_decoder chat_template request openai; do
    case $target in
      gguf | llama2c) seeds=$work/seeds/$target ;;
      *) seeds=$PWD/fuzz/seeds/$target ;;
    esac
    mkdir -p "$work/corpus/$target"
    echo "-- ${target}_fuzz"
    # Crash, leak, UB, timeout (10 s a unit) or out-of-memory all fail.
    if ! (cd "$work" && SINKSERVE_SHARED_DIR=$shared "../fuzz/${target}_fuzz" \
          -max_total_time="$fuzz_seconds" -timeout=10 -rss_limit_mb=3072 -print_final_stats=1 \
          "corpus/$target" "$seeds" > "$target.log" 2>&1); then
      echo "sanitize: ${target}_fuzz failed; the tail of $work/$target.log:"
      tail -40 "$work/$target.log"
      status=1
    fi
    grep -E '^#[0-9]+\s+DONE|number_of_executed_units' "$work/$target.log" || true
  done
  return $status
}

tsan() {
  section "TSan build"
  configure_clang "$tsan_dir" -DSINKSERVE_SANITIZE=thread
  cmake --build "$tsan_dir" -j "$jobs" --target engine_tests kernels_tests server_tests sinkserve-server
  section "TSan tests"
  export TSAN_OPTIONS="suppressions=$PWD/tests/sanitizers/tsan.supp halt_on_error=1 second_deadlock_stack=1"
  export SINKSERVE_SHARED_DIR=$shared
  (cd "$tsan_dir" && ./tests/engine_tests --gtest_brief=1)
  (cd "$tsan_dir" && ./tests/kernels_tests --gtest_brief=1 --gtest_filter='ThreadPool*:CpuBackend*')
  (cd "$tsan_dir" && ./tests/server/server_tests --gtest_brief=1)
}

for step in "${steps[@]}"; do
  case $step in
    asan | fuzz | tsan) "$step" ;;
    *) echo "sanitize: unknown step '$step' (asan, fuzz or tsan)" >&2; exit 2 ;;
  esac
done
section "done"

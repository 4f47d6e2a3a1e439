#!/usr/bin/env bash
# Attention experiments that did not pay: each patch here is applied to a
# temporary copy of the tree, sinkserve-cpu-attention-bench is compiled for
# the baseline and for each patch (same flags as the CPU backend: -O3
# -march=native), and the binaries run interleaved over ROUNDS rounds.
#   bench/cpu/experiments/run.sh > bench/results/cpu/attention-experiments.txt
set -euo pipefail
cd "$(dirname "$0")/../../.."
rounds=${ROUNDS:-5}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
build() {  # build NAME [PATCH]: compiles the bench from a copy of the tree
  mkdir -p "$tmp/$1"
  git archive HEAD kernels engine bench/cpu | tar -x -C "$tmp/$1"
  if [[ $# -gt 1 ]]; then patch -s -d "$tmp/$1" -p1 < "$2"; fi
  g++ -std=c++20 -O3 -march=native -I"$tmp/$1" -I/usr/include -o "$tmp/$1/attention-bench" \
    "$tmp/$1/bench/cpu/attention_bench.cc" "$tmp/$1/kernels/cpu/fast_ops.cc" "$tmp/$1/kernels/cpu/ops.cc"
}
names=(baseline)
build baseline
for p in bench/cpu/experiments/*.patch; do
  name=$(basename "$p" .patch)
  build "$name" "$p"
  names+=("$name")
done
echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); commit $(git rev-parse --short HEAD)"
echo "# each line: best of 30 rounds x 2000 calls (sinkserve-cpu-attention-bench)"
for ((r = 0; r < rounds; r++)); do
  for n in "${names[@]}"; do echo "round=$r variant=$n $("$tmp/$n/attention-bench")"; done
done

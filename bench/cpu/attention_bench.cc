// sinkserve-cpu-attention-bench: the CPU backend's sink+window attention for
// one stories260K-shaped layer (8 heads, 4 kv heads, head_dim 8; S=4, W=252,
// ring 315) on a warm cache, timed alone. Prints the best of 30 rounds of the
// mean time per call, so an attention change can be judged without the noise
// of a whole forward pass. Usage: sinkserve-cpu-attention-bench (no flags).
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include "kernels/cpu/fast_ops.h"

int main() {
  using namespace sinkserve;
  using namespace sinkserve::cpu;
  constexpr int32_t kHeads = 8, kKvHeads = 4, kHeadDim = 8, kCalls = 2000, kRounds = 30;
  const CacheGeometry g{4, 252, 252 + 64 - 1};
  RopeTable rope;
  rope.Build(kHeadDim, RotatedRopePositions(g), 10000.0f);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  // Caches (n_kv_heads, head_dim, slots) + padding; query and output (n_heads, head_dim).
  std::vector<float> k(int64_t{kKvHeads} * kHeadDim * g.Slots() + kCachePadding), v(k.size());
  std::vector<float> q(kHeads * kHeadDim), out(q.size());
  for (std::vector<float>* x : {&k, &v, &q}) {
    for (float& f : *x) f = normal(rng);
  }
  std::vector<float> scratch(RotatedAttentionScratch(g, kHeadDim, kHeads / kKvHeads));
  double best_ns = 1e30;
  float checksum = 0;
  for (int round = 0; round < kRounds; ++round) {
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < kCalls; ++i) {
      // Queries far past the first wrap, cycling over ring positions, so
      // the window spans two laps (three runs of slots) as in steady state.
      const RotatedAttentionArgs args{&g, 100000 + i % 400, q.data(), k.data(), v.data(), out.data(),
                                      kHeads, kKvHeads, kHeadDim, &rope, scratch.data()};
      RotatedAttention(args, 0, kHeads);
      checksum += out[0];
    }
    const std::chrono::duration<double, std::nano> elapsed = std::chrono::steady_clock::now() - start;
    const double ns = elapsed.count() / kCalls;
    if (ns < best_ns) best_ns = ns;
  }
  std::printf("ns_per_layer=%.0f us_per_token_5_layers=%.2f checksum=%g\n", best_ns, best_ns * 5 / 1000, checksum);
  return 0;
}

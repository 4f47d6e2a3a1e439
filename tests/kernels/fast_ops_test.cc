// The CPU backend's fast paths (kernels/cpu/fast_ops.h) against the plain
// reference ops on fresh random inputs, including ragged sizes.
#include "kernels/cpu/fast_ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

namespace sinkserve::cpu {
namespace {

std::vector<float> Random(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

TEST(FastOpsTest, MatMulTransposedMatchesReference) {
  std::mt19937 rng(1);
  for (auto [tokens, n, k] : {std::tuple{1, 16, 8}, {3, 17, 5}, {4, 64, 64}, {7, 172, 64}, {9, 100, 33}, {16, 512, 64}}) {
    const std::vector<float> w = Random(int64_t{n} * k, rng), in = Random(int64_t{tokens} * k, rng);
    std::vector<float> want(int64_t{tokens} * n), got(int64_t{tokens} * n, NAN);
    MatMulRows(want.data(), in.data(), w.data(), tokens, n, k, 0, n);
    const std::vector<float> wt = TransposePadded(w, n, k);
    // Two column ranges, as two threads would split them.
    const int32_t split = std::min(n, kMatMulColumns * ((n / kMatMulColumns + 1) / 2));
    MatMulTransposed(got.data(), in.data(), wt.data(), tokens, n, k, 0, split);
    MatMulTransposed(got.data(), in.data(), wt.data(), tokens, n, k, split, n);
    for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-4f * (1 + std::abs(want[i]))) << i;
  }
}

TEST(FastOpsTest, SoftmaxExpMatchesStdExp) {
  // Softmax arguments: a dense grid over [-100, 0], random points, and -inf;
  // an odd count, so the padded tail runs too.
  std::vector<float> xs = {0.0f, -0.0f, -1e-30f, -86.99f, -87.0f, -87.01f, -88.0f, -1e30f, -INFINITY};
  for (int i = 0; i <= 100000; ++i) xs.push_back(-100.0f * static_cast<float>(i) / 100000.0f);
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> dist(-90.0f, 0.0f);
  for (int i = 0; i < 10001; ++i) xs.push_back(dist(rng));
  std::vector<float> e(xs.size(), NAN);
  SoftmaxExp(e.data(), xs.data(), static_cast<int64_t>(xs.size()));
  for (size_t i = 0; i < xs.size(); ++i) {
    const float x = xs[i];
    if (x < -87.0f) {
      ASSERT_EQ(e[i], 0.0f) << "x=" << x;  // masked keys weigh exactly nothing
    } else {
      const double want = std::exp(static_cast<double>(x));
      ASSERT_NEAR(e[i], want, 4e-7 * want) << "x=" << x;
    }
  }
}

TEST(FastOpsTest, FastSwiGluMatchesReference) {
  std::mt19937 rng(2);
  std::vector<float> gate = Random(37, rng), up = Random(37, rng);
  gate[3] = -120.0f;  // exp overflow territory for silu(-g)
  gate[4] = 95.0f;
  std::vector<float> want = gate, got(37);
  SwiGlu(want.data(), up.data(), 37);
  FastSwiGlu(got.data(), gate.data(), up.data(), 37);
  for (int i = 0; i < 37; ++i) ASSERT_NEAR(got[i], want[i], 1e-5f * (1 + std::abs(want[i]))) << i;
}

TEST(FastOpsTest, FastGeluMatchesReference) {
  std::mt19937 rng(4);
  std::vector<float> x = Random(37, rng);
  x[3] = -120.0f;  // tanh saturates both ways; exp(2u) overflows
  x[4] = 95.0f;
  x[5] = -8.0f;
  x[6] = 0.0f;
  std::vector<float> want = x, got(37);
  Gelu(want.data(), 37);
  FastGelu(got.data(), x.data(), 37);
  for (int i = 0; i < 37; ++i) ASSERT_NEAR(got[i], want[i], 2e-6f * (1 + std::abs(want[i]))) << "x=" << x[i];
}

// Reference keys are cached un-rotated in (slots, kv, hd); the fast path
// wants them in (kv, hd, slots), with RoPE rotated by slot index. Same
// tokens, same answer, with RoPE and with ALiBi (whose bias counts distance
// inside the cache, lap after lap).
void ExpectRotatedAttentionMatchesReference(bool alibi) {
  std::mt19937 rng(alibi ? 13 : 3);
  for (auto [sinks, window, chunk, n_heads, n_kv, hd] :
       {std::tuple{4, 7, 3, 4, 2, 8}, {0, 1, 1, 2, 2, 4}, {1, 20, 5, 8, 1, 16}, {4, 33, 4, 4, 4, 64}, {2, 16, 1, 8, 2, 128}, {3, 40, 2, 6, 2, 8}, {4, 50, 8, 16, 2, 8}}) {
    const CacheGeometry g{sinks, window, window + chunk - 1};
    RopeTable rope;
    rope.Build(hd, RotatedRopePositions(g), 10000.0f);
    std::vector<float> slopes;
    for (int32_t h = 0; h < n_heads; ++h) slopes.push_back(std::exp2(-0.5f * static_cast<float>(h + 1)));
    const float* alibi_slopes = alibi ? slopes.data() : nullptr;
    const int32_t kv_dim = n_kv * hd;
    std::vector<float> k_ref(int64_t{g.Slots()} * kv_dim), v_ref(k_ref.size());
    std::vector<float> k_fast(k_ref.size() + kCachePadding), v_fast(k_ref.size() + kCachePadding);
    std::vector<float> scratch_ref(AttentionScratch(g, hd)), scratch_fast(RotatedAttentionScratch(g, hd, n_heads / n_kv));
    for (int64_t t = 0; t < sinks + 3 * g.ring + 5; ++t) {
      const int32_t slot = g.Slot(t);
      std::vector<float> k = Random(kv_dim, rng), v = Random(kv_dim, rng);
      std::copy(k.begin(), k.end(), k_ref.begin() + int64_t{slot} * kv_dim);
      std::copy(v.begin(), v.end(), v_ref.begin() + int64_t{slot} * kv_dim);
      if (!alibi) {
        for (int32_t h = 0; h < n_kv; ++h) Rope(&k[h * hd], hd, slot, rope);
      }
      for (int32_t e = 0; e < kv_dim; ++e) {
        k_fast[int64_t{e} * g.Slots() + slot] = k[e];
        v_fast[int64_t{e} * g.Slots() + slot] = v[e];
      }
      const std::vector<float> q = Random(int64_t{n_heads} * hd, rng);
      std::vector<float> want(q.size()), got(q.size(), NAN);
      AttentionArgs ref{&g, t, q.data(), k_ref.data(), v_ref.data(), want.data(), n_heads, n_kv, hd, &rope, scratch_ref.data(), alibi_slopes};
      Attention(ref, 0, n_heads);
      RotatedAttentionArgs fast{&g, t, q.data(), k_fast.data(), v_fast.data(), got.data(), n_heads, n_kv, hd, &rope, scratch_fast.data(), alibi_slopes};
      RotatedAttention(fast, 0, n_heads);
      for (size_t i = 0; i < q.size(); ++i) {
        ASSERT_NEAR(got[i], want[i], 2e-5f * (1 + std::abs(want[i]))) << "t=" << t << " i=" << i << " S=" << sinks << " W=" << window;
      }
      // A contrastive candidate for position t + 1: its own key and value
      // beside the cache, slot Slot(t + 1) (stale or t's neighbour) unread.
      const std::vector<float> own_k = Random(kv_dim, rng), own_v = Random(kv_dim, rng);
      ref.t = fast.t = t + 1;
      ref.self_k = fast.self_k = own_k.data();
      ref.self_v = fast.self_v = own_v.data();
      std::fill(got.begin(), got.end(), NAN);
      Attention(ref, 0, n_heads);
      RotatedAttention(fast, 0, n_heads);
      for (size_t i = 0; i < q.size(); ++i) {
        ASSERT_NEAR(got[i], want[i], 2e-5f * (1 + std::abs(want[i]))) << "candidate t=" << t + 1 << " i=" << i;
      }
    }
  }
}

TEST(FastOpsTest, RotatedAttentionMatchesReferenceAcrossLaps) { ExpectRotatedAttentionMatchesReference(false); }
TEST(FastOpsTest, AlibiAttentionMatchesReferenceAcrossLaps) { ExpectRotatedAttentionMatchesReference(true); }

// ALiBi over a sink+window cache: a key's bias is its distance inside the
// cache, so after any number of laps the query sees the same biases as one
// that has never evicted, and the distance never exceeds sinks + window - 1.
TEST(FastOpsTest, AlibiBiasCountsDistanceInsideTheCache) {
  const CacheGeometry g{4, 10, 12};
  const int32_t hd = 4;
  const float slope = 0.5f;
  std::vector<float> k(int64_t{g.Slots()} * hd, 0.0f), v(k.size(), 0.0f), q(hd, 0.0f), out(hd);
  // Zero keys: every score is the bias alone. Value d of the key is its
  // slot, so out[0] is the softmax-weighted mean slot.
  for (int32_t s = 0; s < g.Slots(); ++s) v[int64_t{s} * hd] = static_cast<float>(s);
  std::vector<float> scratch(AttentionScratch(g, hd));
  RopeTable rope;
  rope.Build(hd, RotatedRopePositions(g), 10000.0f);
  std::vector<double> first_lap;
  for (int64_t t : {int64_t{13}, int64_t{13} + 12, int64_t{13} + 12 * 1000000}) {
    AttentionArgs a{&g, t, q.data(), k.data(), v.data(), out.data(), 1, 1, hd, &rope, scratch.data(), &slope};
    Attention(a, 0, 1);
    // The weights: exp(-slope * distance) over distances 0..13 (the window
    // 0..9 and the four sinks at 10..13), whatever the slots hold.
    double num = 0, den = 0;
    for (int32_t i = 0; i < g.KeyCount(t); ++i) {
      const int64_t j = i < g.sinks ? i : g.WindowBegin(t) + (i - g.sinks);
      const double w = std::exp(-slope * (g.QueryPosition(t) - g.KeyPosition(j, t)));
      ASSERT_LE(g.QueryPosition(t) - g.KeyPosition(j, t), g.sinks + g.window - 1);
      num += w * g.Slot(j);
      den += w;
    }
    EXPECT_NEAR(out[0], num / den, 1e-4) << "t=" << t;
  }
}

}  // namespace
}  // namespace sinkserve::cpu

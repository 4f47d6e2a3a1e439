// KV append and sink+window attention against cpu::Attention, for batches of
// sessions at different ages in one launch: decode and prefill chunks, the
// first wrap of the ring, sinks only, W = 1, GQA ratios 1/4/8 (and 16, which
// takes two blocks per kv head), head_dim 8/64/128, split-K forced and auto.
// The same harness runs the tiled prefill kernel, alone or beside the decode
// kernel in one step (AttentionPlan), with head_dim up to 256 and GQA 64.
// ALiBi cases run both kernels with slopes instead of RoPE.
#include <gtest/gtest.h>

#include <limits>
#include <string>

#include "absl/strings/str_format.h"
#include "kernels/cpu/ops.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/attention_plan.h"
#include "kernels/cuda/kv_append.cuh"
#include "kernels/cuda/step_desc.h"
#include "tests/kernels/cuda/cuda_test_util.h"

namespace sinkserve::cuda {
namespace {

using namespace ::sinkserve::cuda::testing;

struct Session {
  int64_t n_past;
  int32_t n_tokens;
};

struct AttnCase {
  std::string name;
  int32_t n_heads, n_kv_heads, head_dim;
  int32_t sinks, window, max_chunk;
  std::vector<Session> sessions;
  int32_t splits = 0;  // 0 = AttentionSplits
  DType dtype = DType::kF16;
  int32_t prefill_min_tokens = 0;  // entries with this many tokens take the prefill kernel; 0 = none
  bool alibi = false;              // ALiBi slopes instead of RoPE
};

std::vector<AttnCase> Cases() {
  std::vector<AttnCase> c;
  // S=4, W=32, decode (ring 32): t=0, inside the sinks, 33 keys (not a tile
  // multiple), the first wrap (t = 36 reuses slot 4), long after.
  c.push_back({"decode_gqa1_hd64", 8, 8, 64, 4, 32, 1, {{0, 1}, {2, 1}, {32, 1}, {36, 1}, {37, 1}, {1000003, 1}}});
  c.push_back({"decode_gqa4_hd128", 8, 2, 128, 4, 32, 1, {{1, 1}, {35, 1}, {36, 1}, {500, 1}}});
  c.push_back({"decode_gqa8_hd128", 8, 1, 128, 4, 100, 1, {{3, 1}, {103, 1}, {104, 1}, {77777, 1}}});
  c.push_back({"decode_gqa16_hd64", 16, 1, 64, 2, 50, 1, {{10, 1}, {60, 1}}});
  c.push_back({"decode_hd8_stories", 8, 4, 8, 4, 64, 1, {{0, 1}, {67, 1}, {68, 1}, {2000, 1}}});
  c.push_back({"window_one", 4, 2, 64, 4, 1, 1, {{0, 1}, {3, 1}, {4, 1}, {5, 1}, {99, 1}}});
  c.push_back({"sinks_only", 4, 4, 64, 16, 8, 1, {{0, 1}, {7, 1}, {15, 1}}});
  c.push_back({"no_sinks", 4, 1, 64, 0, 40, 1, {{0, 1}, {39, 1}, {40, 1}, {41, 1}}});
  // Prefill chunks (ring = W + 7): inside the sinks, across the first wrap,
  // long after, next to decode tokens in the same batch.
  c.push_back({"prefill_chunks", 8, 2, 64, 4, 24, 8, {{0, 8}, {2, 5}, {27, 8}, {30, 1}, {1000, 7}}});
  c.push_back({"prefill_gqa8_hd128", 8, 1, 128, 4, 64, 16, {{0, 16}, {60, 16}, {70, 3}}});
  // Split-K forced: more splits than some sessions have keys (empty splits).
  c.push_back({"splits_3", 8, 2, 64, 4, 32, 1, {{0, 1}, {5, 1}, {40, 1}}, 3});
  c.push_back({"splits_64", 8, 2, 128, 4, 200, 4, {{1, 1}, {150, 4}, {5000, 1}}, 64});
  c.push_back({"splits_1_large_window", 4, 1, 128, 4, 1000, 1, {{1200, 1}}, 1});
  c.push_back({"bf16_prefill", 8, 2, 64, 4, 24, 8, {{0, 8}, {27, 8}, {30, 1}}, 0, DType::kBF16});
  c.push_back({"bf16_splits", 8, 8, 128, 4, 300, 1, {{10, 1}, {4000, 1}}, 16, DType::kBF16});
  // The prefill kernel for every entry, decode tokens included (min 1).
  const DType f16 = DType::kF16;
  c.push_back({"tiled_chunks", 8, 2, 64, 4, 24, 8, {{0, 8}, {2, 5}, {27, 8}, {30, 1}, {1000, 7}}, 0, f16, 1});
  // Several query tiles and key tiles per entry, key counts not a multiple of
  // the tile, chunks straddling the sinks and the first wrap.
  c.push_back({"tiled_gqa4_hd128", 8, 2, 128, 4, 100, 64, {{0, 64}, {37, 64}, {1000, 64}, {5, 1}}, 0, f16, 1});
  c.push_back({"tiled_gqa1_hd64", 4, 4, 64, 4, 50, 40, {{0, 40}, {30, 40}, {777, 33}}, 0, f16, 1});
  c.push_back({"tiled_gqa8_hd128", 8, 1, 128, 4, 64, 16, {{0, 16}, {60, 16}, {70, 3}}, 0, f16, 1});
  c.push_back({"tiled_gqa64_hd64", 64, 1, 64, 4, 40, 8, {{0, 8}, {45, 8}}, 0, f16, 1});  // two head chunks
  c.push_back({"tiled_hd8_stories", 8, 4, 8, 4, 64, 16, {{0, 16}, {60, 16}, {2000, 16}}, 0, f16, 1});
  c.push_back({"tiled_hd256", 4, 1, 256, 4, 50, 16, {{0, 16}, {45, 16}}, 0, f16, 1});
  c.push_back({"tiled_window_one", 4, 2, 64, 4, 1, 8, {{0, 8}, {3, 8}, {100, 8}}, 0, f16, 1});
  c.push_back({"tiled_sinks_only", 4, 4, 64, 16, 8, 8, {{0, 8}, {10, 8}}, 0, f16, 1});
  c.push_back({"tiled_no_sinks", 4, 1, 64, 0, 40, 16, {{0, 16}, {39, 16}, {1000, 16}}, 0, f16, 1});
  c.push_back({"tiled_bf16", 8, 2, 64, 4, 24, 8, {{0, 8}, {27, 8}, {30, 1}}, 0, DType::kBF16, 1});
  // Groups that do not divide the 32 rows (7: four idle rows; 40: a full
  // and a partial head chunk), head_dim % 4 == 2, more sinks than a key tile.
  c.push_back({"tiled_gqa7_hd18", 28, 4, 18, 4, 30, 12, {{0, 12}, {25, 12}, {500, 9}}, 0, f16, 1});
  c.push_back({"tiled_gqa40_hd64", 40, 1, 64, 4, 20, 4, {{0, 4}, {22, 4}}, 0, f16, 1});
  c.push_back({"tiled_sinks40", 4, 2, 64, 40, 16, 8, {{0, 8}, {36, 8}, {60, 8}, {300, 8}}, 0, f16, 1});
  c.push_back({"decode_gqa7_hd18", 28, 4, 18, 4, 30, 1, {{0, 1}, {33, 1}, {500, 1}}});
  // Both kernels in one step: chunks of >= 4 tiled, the rest one query per
  // block through a token list, split-K forced on the decode side.
  c.push_back({"mixed_plan", 8, 2, 64, 4, 32, 8, {{3, 1}, {0, 8}, {40, 2}, {100, 5}, {9999, 1}}, 0, f16, 4});
  c.push_back({"mixed_plan_splits", 8, 2, 128, 4, 200, 16, {{150, 1}, {10, 16}, {5000, 3}}, 8, f16, 4});
  // ALiBi (MPT: no GQA): decode across wraps and split, tiled prefill, both at once.
  c.push_back({"alibi_decode", 8, 8, 32, 4, 60, 1, {{0, 1}, {3, 1}, {63, 1}, {64, 1}, {1000003, 1}}, 0, f16, 0, true});
  c.push_back({"alibi_splits", 8, 8, 64, 4, 200, 1, {{10, 1}, {4000, 1}}, 8, DType::kBF16, 0, true});
  c.push_back({"alibi_tiled", 8, 8, 32, 4, 60, 16, {{0, 16}, {50, 16}, {100000, 16}}, 0, f16, 1, true});
  c.push_back({"alibi_mixed", 12, 12, 64, 4, 40, 8, {{3, 1}, {0, 8}, {45, 5}, {9999, 1}}, 4, f16, 4, true});
  return c;
}

class AttentionTest : public ::testing::TestWithParam<AttnCase> {};

TEST_P(AttentionTest, AppendThenAttendMatchesCpuReference) {
  REQUIRE_CUDA_DEVICE();
  const AttnCase& p = GetParam();
  const DType d = p.dtype;
  const int32_t hd = p.head_dim, kv_dim = p.n_kv_heads * hd, q_dim = p.n_heads * hd;
  const int32_t qkv_stride = q_dim + 2 * kv_dim;
  const int32_t layers = 2, layer = 1;  // attend in layer 1 so layer offsets are exercised
  CacheGeometry g{.sinks = p.sinks, .window = p.window, .ring = p.window + p.max_chunk - 1};
  const int64_t layer_elems = LayerElements(g, p.n_kv_heads, hd);
  const int64_t session_elems = layers * layer_elems + 64;  // + padding between sessions
  const int32_t n_seqs = static_cast<int32_t>(p.sessions.size());

  // Host: each session's fp32 reference cache (slots, n_kv_heads, hd) for
  // keys 0 .. n_past - 1, and the device pool holding the same values in the
  // kernel layout; the step's own K/V arrive through the append kernel.
  std::vector<uint16_t> pool_bits(session_elems * n_seqs, 0xFFFF);  // poison
  std::vector<std::vector<float>> ref_k(n_seqs), ref_v(n_seqs);
  std::vector<SeqDesc> descs;
  std::vector<int32_t> token_seq;
  int32_t T = 0;
  for (int32_t e = 0; e < n_seqs; ++e) {
    const Session& s = p.sessions[e];
    ref_k[e].assign(int64_t{g.Slots()} * kv_dim, 0.0f);
    ref_v[e].assign(ref_k[e].size(), 0.0f);
    // Only the last `window + max_chunk` keys before n_past can still be in the ring; older ones are overwritten anyway.
    const int64_t first = std::max<int64_t>(0, s.n_past - g.ring - 1);
    for (int64_t j = 0; j < s.n_past; ++j) {
      if (j >= g.sinks && j < first) continue;
      const int32_t slot = g.Slot(j);
      const std::vector<float> k = Round(d, RandomVector(kv_dim, j * 7919 + e));
      const std::vector<float> v = Round(d, RandomVector(kv_dim, j * 7919 + e + 1000000007));
      for (int32_t h = 0; h < p.n_kv_heads; ++h) {
        for (int32_t x = 0; x < hd; ++x) {
          ref_k[e][(int64_t{slot} * p.n_kv_heads + h) * hd + x] = k[h * hd + x];
          ref_v[e][(int64_t{slot} * p.n_kv_heads + h) * hd + x] = v[h * hd + x];
          const int64_t base = e * session_elems + layer * layer_elems;
          pool_bits[base + (int64_t{h} * g.Slots() + slot) * hd + x] = ToBits(d, k[h * hd + x]);
          pool_bits[base + layer_elems / 2 + (int64_t{h} * g.Slots() + slot) * hd + x] = ToBits(d, v[h * hd + x]);
        }
      }
    }
    descs.push_back({.cache_offset = e * session_elems, .n_past = s.n_past, .geometry = g, .token_begin = T,
                     .n_tokens = s.n_tokens});
    for (int32_t i = 0; i < s.n_tokens; ++i) token_seq.push_back(e);
    T += s.n_tokens;
  }
  // The step's q | k | v rows; k and v are rounded so the reference stores what the kernel stores.
  std::vector<float> qkv = RandomVector(int64_t{T} * qkv_stride, 424242);
  for (int32_t t = 0; t < T; ++t) {
    for (int32_t i = q_dim; i < qkv_stride; ++i) qkv[int64_t{t} * qkv_stride + i] = Round(d, qkv[int64_t{t} * qkv_stride + i]);
  }

  // Work split as the backend splits it; without prefill_min_tokens every
  // token takes the decode kernel with no token list.
  const AttentionPlan plan =
      PlanAttention(descs, p.prefill_min_tokens > 0 ? p.prefill_min_tokens : std::numeric_limits<int32_t>::max(),
                    PrefillQueriesPerTile(p.n_heads, p.n_kv_heads));
  const int32_t n_decode = static_cast<int32_t>(plan.decode_tokens.size());
  ASSERT_EQ(plan.AllDecode(T), p.prefill_min_tokens == 0);
  DevicePtr d_list = plan.AllDecode(T) || n_decode == 0 ? nullptr : Upload(plan.decode_tokens);
  DevicePtr d_tiles = plan.tiles.empty() ? nullptr : Upload(plan.tiles);

  cpu::RopeTable rope;
  rope.Build(hd, PrefillRopePositions(g, PrefillQueriesPerTile(p.n_heads, p.n_kv_heads)), 10000.0f);
  DevicePtr d_pool = Upload(pool_bits), d_qkv = Upload(qkv), d_desc = Upload(descs), d_tseq = Upload(token_seq);
  DevicePtr d_cos = Upload(rope.cos), d_sin = Upload(rope.sin);
  std::vector<float> slopes;  // llama.cpp's series for max bias 8 over the largest power of two <= n_heads
  int32_t pow2 = 1;
  while (pow2 * 2 <= p.n_heads) pow2 *= 2;
  for (int32_t h = 0; h < p.n_heads; ++h) {
    slopes.push_back(h < pow2 ? std::exp2(-8.0f * (h + 1) / pow2) : std::exp2(-4.0f * (2 * (h - pow2) + 1) / pow2));
  }
  DevicePtr d_slopes = Upload(slopes);
  const float* alibi = p.alibi ? As<float>(d_slopes) : nullptr;
  KvAppendArgs append{.dtype = d, .qkv = As<float>(d_qkv), .qkv_stride = qkv_stride, .k_offset = q_dim,
                      .pool = d_pool.get(), .seqs = As<SeqDesc>(d_desc), .token_seq = As<int32_t>(d_tseq),
                      .tokens = T, .n_kv_heads = p.n_kv_heads, .head_dim = hd, .layer = layer};
  LaunchKvAppend(append, nullptr);

  int32_t max_keys = g.MaxPositions();
  const int64_t partial_cap = AttentionPartialFloats(T, p.n_heads, hd, 128);
  const int32_t splits =
      p.splits > 0 ? p.splits : AttentionSplits(n_decode, p.n_heads, p.n_kv_heads, hd, max_keys, 132, partial_cap);
  DevicePtr out = Poisoned(int64_t{T} * q_dim * 2);
  DevicePtr partial = Poisoned(std::max<int64_t>(partial_cap, 1) * 4);
  LaunchAttention({.dtype = d, .qkv = As<float>(d_qkv), .qkv_stride = qkv_stride, .pool = d_pool.get(),
                   .seqs = As<SeqDesc>(d_desc), .token_seq = As<int32_t>(d_tseq),
                   .token_list = As<int32_t>(d_list), .rope_cos = As<float>(d_cos), .rope_sin = As<float>(d_sin),
                   .rope_positions = rope.positions, .alibi_slopes = alibi, .out = out.get(),
                   .partial = As<float>(partial),
                   .partial_floats = partial_cap, .tokens = n_decode, .n_heads = p.n_heads,
                   .n_kv_heads = p.n_kv_heads, .head_dim = hd, .layer = layer, .splits = splits},
                  nullptr);
  LaunchPrefillAttention({.dtype = d, .qkv = As<float>(d_qkv), .qkv_stride = qkv_stride, .pool = d_pool.get(),
                          .seqs = As<SeqDesc>(d_desc), .tiles = As<PrefillTile>(d_tiles),
                          .n_tiles = static_cast<int32_t>(plan.tiles.size()), .rope_cos = As<float>(d_cos),
                          .rope_sin = As<float>(d_sin), .rope_positions = rope.positions, .alibi_slopes = alibi,
                          .out = out.get(),
                          .n_heads = p.n_heads, .n_kv_heads = p.n_kv_heads, .head_dim = hd, .layer = layer},
                         nullptr);
  const std::vector<float> got = DownloadAs(d, out, int64_t{T} * q_dim);

  // The appended slots hold the step's K/V, rounded.
  const std::vector<uint16_t> pool_after = Download<uint16_t>(d_pool, pool_bits.size());
  std::vector<float> want(int64_t{T} * q_dim);
  std::vector<float> scratch(cpu::AttentionScratch(g, hd) + 64);
  for (int32_t e = 0, tok = 0; e < n_seqs; ++e) {
    const Session& s = p.sessions[e];
    for (int32_t i = 0; i < s.n_tokens; ++i) {  // append every chunk token first, as the backends do
      const int32_t slot = g.Slot(s.n_past + i);
      for (int32_t x = 0; x < kv_dim; ++x) {
        const int32_t h = x / hd;
        ref_k[e][int64_t{slot} * kv_dim + x] = qkv[int64_t{tok + i} * qkv_stride + q_dim + x];
        ref_v[e][int64_t{slot} * kv_dim + x] = qkv[int64_t{tok + i} * qkv_stride + q_dim + kv_dim + x];
        const int64_t at = e * session_elems + layer * layer_elems + (int64_t{h} * g.Slots() + slot) * hd + x % hd;
        ASSERT_EQ(FromBits(d, pool_after[at]), ref_k[e][int64_t{slot} * kv_dim + x]) << "K append, seq " << e;
        ASSERT_EQ(FromBits(d, pool_after[at + layer_elems / 2]), ref_v[e][int64_t{slot} * kv_dim + x]) << "V append";
      }
    }
    for (int32_t i = 0; i < s.n_tokens; ++i, ++tok) {
      cpu::AttentionArgs args{.geometry = &g, .t = s.n_past + i, .q = &qkv[int64_t{tok} * qkv_stride],
                              .k_cache = ref_k[e].data(), .v_cache = ref_v[e].data(), .out = &want[int64_t{tok} * q_dim],
                              .n_heads = p.n_heads, .n_kv_heads = p.n_kv_heads, .head_dim = hd, .rope = &rope,
                              .scratch = scratch.data(), .alibi_slopes = p.alibi ? slopes.data() : nullptr};
      cpu::Attention(args, 0, p.n_heads);
    }
  }
  // Output is one storage rounding from an fp32 computation over identical
  // (rounded) inputs: allow a few roundings.
  const double rtol = d == DType::kF16 ? 3e-3 : 2e-2;
  int64_t where = -1;
  const double worst = WorstScaledError(got, want, rtol / 2, rtol, &where);
  EXPECT_LE(worst, 1.0) << absl::StrFormat("splits=%d T=%d: element %d (token %d, head %d) got %g want %g", splits, T,
                                           where, where / q_dim, (where % q_dim) / hd, got[where], want[where]);
}

INSTANTIATE_TEST_SUITE_P(Cases, AttentionTest, ::testing::ValuesIn(Cases()),
                         [](const auto& info) { return info.param.name; });

TEST(AttentionPlanTest, ChunksTakeTilesAndTheRestTakeTheTokenList) {
  // Pure host logic: runs without a device.
  std::vector<SeqDesc> seqs(3);
  seqs[0].token_begin = 0, seqs[0].n_tokens = 1;
  seqs[1].token_begin = 1, seqs[1].n_tokens = 20;
  seqs[2].token_begin = 21, seqs[2].n_tokens = 3;
  const AttentionPlan plan = PlanAttention(seqs, 4, 8);
  EXPECT_EQ(plan.decode_tokens, (std::vector<int32_t>{0, 21, 22, 23}));
  ASSERT_EQ(plan.tiles.size(), 3u);
  EXPECT_EQ(plan.tiles[0].seq, 1);
  EXPECT_EQ(plan.tiles[0].first, 1);
  EXPECT_EQ(plan.tiles[0].count, 8);
  EXPECT_EQ(plan.tiles[2].first, 17);
  EXPECT_EQ(plan.tiles[2].count, 4);  // the last tile is short
  EXPECT_FALSE(plan.AllDecode(24));
  EXPECT_TRUE(PlanAttention(seqs, 21, 8).AllDecode(24));
  EXPECT_EQ(PlanAttention(seqs, 1, 8).decode_tokens.size(), 0u);
}

TEST(AttentionPlanTest, PrefillTilesAndRopeTableSizes) {
  EXPECT_EQ(PrefillQueriesPerTile(32, 32), kPrefillRows);   // MHA: 32 tokens x 1 head
  EXPECT_EQ(PrefillQueriesPerTile(32, 8), kPrefillRows / 4);
  EXPECT_EQ(PrefillQueriesPerTile(28, 4), kPrefillRows / 7);  // 4 tokens x 7 heads, 4 rows idle
  EXPECT_EQ(PrefillQueriesPerTile(64, 1), 1);                 // two blocks of 32 heads
  const CacheGeometry g{.sinks = 4, .window = 100, .ring = 163};
  // Window offsets reach window + queries_per_tile - 2 (first query's window
  // begin to the last query); cache positions stay below sinks + window.
  EXPECT_EQ(PrefillRopePositions(g, 8), 107);
  EXPECT_EQ(PrefillRopePositions(g, 1), 104);
}

TEST(AttentionSplitsTest, SplitsOnlyWhenTheGridIsSmallAndRespectsScratch) {
  // Pure host logic: runs without a device.
  EXPECT_EQ(AttentionSplits(256, 32, 8, 128, 4100, 132, 1 << 30), 1);     // 2048 blocks: no split
  EXPECT_GT(AttentionSplits(1, 32, 8, 128, 4100, 132, 1 << 30), 8);       // 8 blocks: split
  EXPECT_LE(AttentionSplits(1, 32, 8, 128, 100, 132, 1 << 30), 2);        // few keys: few splits
  EXPECT_EQ(AttentionSplits(1, 32, 8, 128, 4100, 132, 0), 1);             // no scratch: no split
  const int32_t s = AttentionSplits(4, 32, 8, 128, 4100, 132, 20000);
  EXPECT_LE(AttentionPartialFloats(4, 32, 128, s), 20000);
}

}  // namespace
}  // namespace sinkserve::cuda

// The CUDA backend as a whole against the CPU reference backend.
#include "kernels/cuda/cuda_backend.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/cache_policy.h"
#include "engine/model/model_loader.h"
#include "engine/sampler.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/kernels/cuda/cuda_test_util.h"
#include "tests/cache_export_check.h"
#include "tests/random_model.h"
#include "tests/test_data.h"

namespace sinkserve {
namespace {

using cuda::testing::RelativeError;
using testing::RandomModel;
using testing::RandomTokens;
using testing::TinyConfig;

CudaBackendConfig SmallPool(const char* dtype = "fp16") {
  CudaBackendConfig c;
  c.dtype = dtype;
  c.gpu_memory_gib = 0.25;
  c.max_step_tokens = 256;
  return c;
}

std::unique_ptr<CudaBackend> MakeCuda(Model model, const CudaBackendConfig& config) {
  auto b = CudaBackend::Create(std::move(model), config);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? std::move(*b) : nullptr;
}

std::unique_ptr<CpuBackend> MakeCpu(Model model) {
  auto b = CpuBackend::Create(std::move(model), 0);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? std::move(*b) : nullptr;
}

// Worst per-row relative L2 error of `got` against `want`, rows of `vocab`.
double WorstRowError(const std::vector<float>& got, const std::vector<float>& want, int32_t vocab) {
  EXPECT_EQ(got.size(), want.size());
  double worst = 0.0;
  for (size_t r = 0; r + vocab <= want.size() && got.size() == want.size(); r += vocab) {
    const double e = RelativeError(&got[r], &want[r], vocab);
    worst = std::isnan(e) ? INFINITY : std::max(worst, e);
  }
  return worst;
}

// What RunMixedBatches saw: the worst row error, the CUDA backend's counters,
// and the graph replays its steps should have produced: a step whose every
// entry is below prefill_min_tokens is graph-shaped, and each such shape
// (tokens, logit rows) replays from its second step on.
struct MixedRun {
  double worst = INFINITY;
  CudaBackend::Stats stats;
  int64_t expected_graph_launches = 0;
};

// Drives several sessions through both backends step by step: session e
// feeds chunks of its own size, so prefill chunks, decode tokens, first
// wraps and multi-lap rings share batches; every third step only the
// one-token sessions run, so decode-only steps come between the others.
MixedRun RunMixedBatches(const Model& model, const CudaBackendConfig& config, const CacheConfig& policy,
                         int32_t max_chunk, int32_t steps) {
  MixedRun run;
  auto cpu = MakeCpu(model);
  auto gpu = MakeCuda(model, config);
  if (!cpu || !gpu) return run;
  const int32_t vocab = model.config.vocab_size;
  auto geometry = GeometryFor(policy, max_chunk, model.config.max_seq_len);
  EXPECT_TRUE(geometry.ok());
  const std::vector<int32_t> chunk_of = {max_chunk, 1, std::max(1, max_chunk / 2), 1};
  std::vector<CacheId> cpu_ids, gpu_ids;
  for (size_t e = 0; e < chunk_of.size(); ++e) {
    cpu_ids.push_back(*cpu->CreateCache(*geometry));
    gpu_ids.push_back(*gpu->CreateCache(*geometry));
  }
  std::vector<int64_t> past(chunk_of.size(), 0);
  std::map<std::pair<int32_t, int32_t>, int32_t> graph_shapes;  // (tokens, rows) -> steps
  run.worst = 0.0;
  for (int32_t step = 0; step < steps; ++step) {
    Batch cpu_batch, gpu_batch;
    bool graph_shaped = config.cuda_graphs;
    for (size_t e = 0; e < chunk_of.size(); ++e) {
      if ((step + e) % 5 == 4) continue;                  // sessions sit out some steps
      if (step % 3 == 2 && chunk_of[e] > 1) continue;   // decode-only steps
      const std::vector<int32_t> ids = RandomTokens(chunk_of[e], vocab, step * 31 + e);
      const bool all = e == 0;
      cpu_batch.Add(cpu_ids[e], past[e], ids, all);
      gpu_batch.Add(gpu_ids[e], past[e], ids, all);
      past[e] += chunk_of[e];
      graph_shaped = graph_shaped && chunk_of[e] < config.prefill_min_tokens;
    }
    if (graph_shaped) {
      const int32_t seen = graph_shapes[{static_cast<int32_t>(gpu_batch.tokens.size()), gpu_batch.LogitRows()}]++;
      run.expected_graph_launches += seen >= 1;
    }
    std::vector<float> want, got;
    EXPECT_TRUE(cpu->Forward(cpu_batch, &want).ok());
    absl::Status st = gpu->Forward(gpu_batch, &got);
    EXPECT_TRUE(st.ok()) << st;
    if (!st.ok()) {
      run.worst = INFINITY;
      return run;
    }
    run.worst = std::max(run.worst, WorstRowError(got, want, vocab));
  }
  run.stats = gpu->stats();
  return run;
}

struct ModelCase {
  const char* name;
  int32_t dim, heads, kv_heads;  // head_dim = dim / heads
  const char* dtype;
  double tolerance;
};

// How a step's attention runs: which kernel takes chunks, and graphs or not.
struct PathCase {
  const char* name;
  int32_t prefill_min_tokens;
  bool cuda_graphs;
};

class CudaVsCpuTest : public ::testing::TestWithParam<std::tuple<ModelCase, PathCase>> {};

TEST_P(CudaVsCpuTest, MixedPrefillAndDecodeBatchesMatchCpu) {
  REQUIRE_CUDA_DEVICE();
  const auto& [p, path] = GetParam();
  ModelConfig c = TinyConfig(p.dim, p.heads, p.kv_heads, 2, 97, 2 * p.dim + 16);
  const Model model = RandomModel(c, 7, 1.0f / std::sqrt(static_cast<float>(p.dim)));
  CudaBackendConfig config = SmallPool(p.dtype);
  config.prefill_min_tokens = path.prefill_min_tokens;
  config.cuda_graphs = path.cuda_graphs;
  const MixedRun run = RunMixedBatches(model, config, {CachePolicy::kSinkWindow, 3, 13}, 6, 30);
  EXPECT_LE(run.worst, p.tolerance) << "worst per-row relative logit error";
  EXPECT_EQ(run.stats.steps, 30);
  EXPECT_EQ(run.stats.graph_launches, run.expected_graph_launches);
  if (path.cuda_graphs) {
    EXPECT_GT(run.stats.graph_launches, 0);
  }
}

// GQA 1/4/8 with head_dim 8/64/128; bf16 rounds 8x coarser than fp16. Each
// model through: decode kernel + graphs; chunks of >= 2 on the prefill kernel
// (graphs for the decode-only steps); everything on the prefill kernel, eager.
INSTANTIATE_TEST_SUITE_P(
    Models, CudaVsCpuTest,
    ::testing::Combine(
        ::testing::Values(ModelCase{"hd8_gqa2", 32, 4, 2, "fp16", 1e-2}, ModelCase{"hd64_gqa1", 256, 4, 4, "fp16", 1e-2},
                          ModelCase{"hd64_gqa4", 256, 4, 1, "fp16", 1e-2},
                          ModelCase{"hd128_gqa8", 1024, 8, 1, "fp16", 1e-2},
                          ModelCase{"hd64_gqa4_bf16", 256, 4, 1, "bf16", 4e-2}),
        ::testing::Values(PathCase{"decode_graphs", 1 << 30, true}, PathCase{"mixed", 2, true},
                          PathCase{"prefill_eager", 1, false})),
    [](const auto& info) {
      return absl::StrCat(std::get<0>(info.param).name, "_", std::get<1>(info.param).name);
    });

TEST(CudaBackendTest, GraphReplaysMatchEagerStepsAsSessionsComeAndGo) {
  REQUIRE_CUDA_DEVICE();
  const Model model = RandomModel(TinyConfig(64, 4, 2, 2, 200, 96), 9);
  CudaBackendConfig eager_config = SmallPool(), graph_config = SmallPool();
  eager_config.cuda_graphs = false;
  auto eager = MakeCuda(model, eager_config);
  auto graphs = MakeCuda(model, graph_config);
  ASSERT_TRUE(eager && graphs);
  const CacheGeometry g{.sinks = 2, .window = 9, .ring = 9};
  constexpr int kSessions = 4;
  std::vector<CacheId> ids_e, ids_g;
  for (int e = 0; e < kSessions; ++e) {
    ids_e.push_back(*eager->CreateCache(g));
    ids_g.push_back(*graphs->CreateCache(g));
  }
  // Each step decodes a different subset of sessions, so a shape (1..4
  // tokens) is replayed with other caches, other ages and other tokens than
  // it was captured with.
  std::vector<int64_t> past(kSessions, 0);
  std::set<size_t> sizes;
  constexpr int kSteps = 60;
  for (int step = 0; step < kSteps; ++step) {
    Batch be, bg;
    for (int e = 0; e < kSessions; ++e) {
      if ((step * 7 + e * 3) % (e + 2) == 0 && e != step % kSessions) continue;
      const std::vector<int32_t> token = RandomTokens(1, 200, step * 100 + e);
      be.Add(ids_e[e], past[e], token);
      bg.Add(ids_g[e], past[e], token);
      ++past[e];
    }
    sizes.insert(bg.seqs.size());
    std::vector<float> want, got;
    ASSERT_TRUE(eager->Forward(be, &want).ok());
    ASSERT_TRUE(graphs->Forward(bg, &got).ok());
    ASSERT_EQ(got.size(), want.size());
    // Same kernels on the same data; only cuBLAS's choice under capture
    // could differ (rounding, ~1e-3). A stale replay is off by O(1).
    EXPECT_LE(WorstRowError(got, want, 200), 1e-3) << "step " << step;
  }
  const CudaBackend::Stats stats = graphs->stats();
  // Every step but the first of each batch size replays; sizes seen twice are captured.
  EXPECT_EQ(stats.graph_launches, kSteps - static_cast<int64_t>(sizes.size()));
  EXPECT_LE(stats.graph_captures, static_cast<int64_t>(sizes.size()));
  EXPECT_EQ(eager->stats().graph_launches, 0);
}

// Twin backends, graphs on and off, stepped alike; every step's logits must agree.
struct GraphTwins {
  std::unique_ptr<CudaBackend> eager, graphs;
  std::vector<CacheId> caches;  // the same ids in both
  std::vector<int64_t> past;

  GraphTwins(const Model& model, CudaBackendConfig config) {
    config.cuda_graphs = false;
    eager = MakeCuda(model, config);
    config.cuda_graphs = true;
    graphs = MakeCuda(model, config);
  }
  void AddCache(const CacheGeometry& g) {
    const CacheId a = *eager->CreateCache(g);
    ASSERT_EQ(a, *graphs->CreateCache(g));
    caches.push_back(a);
    past.push_back(0);
  }
  // One step: `tokens` new tokens for each listed cache.
  void Step(const std::vector<int32_t>& which, int32_t tokens, uint64_t seed) {
    Batch batch;
    for (int32_t c : which) {
      batch.Add(caches[c], past[c], RandomTokens(tokens, eager->config().vocab_size, seed + c));
      past[c] += tokens;
    }
    std::vector<float> want, got;
    ASSERT_TRUE(eager->Forward(batch, &want).ok());
    ASSERT_TRUE(graphs->Forward(batch, &got).ok());
    EXPECT_LE(WorstRowError(got, want, eager->config().vocab_size), 1e-3) << "seed " << seed;
  }
};

TEST(CudaBackendTest, GraphsAreRecapturedAfterTheRopeTableOrScratchGrows) {
  REQUIRE_CUDA_DEVICE();
  GraphTwins twins(RandomModel(TinyConfig(64, 4, 2, 2, 200, 96), 12), SmallPool());  // scratch: 256 tokens
  ASSERT_TRUE(twins.eager && twins.graphs);
  const CacheGeometry small{.sinks = 2, .window = 9, .ring = 9};
  twins.AddCache(small);
  twins.AddCache(small);
  for (int i = 0; i < 4; ++i) twins.Step({0, 1}, 1, 100 + i);
  EXPECT_EQ(twins.graphs->stats().graph_captures, 1);
  EXPECT_EQ(twins.graphs->stats().graph_launches, 3);
  // A much larger window grows the RoPE table the graph points at.
  twins.AddCache({.sinks = 4, .window = 600, .ring = 899});
  for (int i = 0; i < 3; ++i) twins.Step({0, 1}, 1, 200 + i);
  EXPECT_EQ(twins.graphs->stats().graph_captures, 2);
  // A 300-token step grows the step scratch past its 256 tokens.
  twins.Step({2}, 300, 300);
  for (int i = 0; i < 3; ++i) twins.Step({0, 1}, 1, 400 + i);
  EXPECT_EQ(twins.graphs->stats().graph_captures, 3);
  EXPECT_EQ(twins.graphs->stats().graph_launches, 3 + 3 + 3);
}

TEST(CudaBackendTest, GraphCacheEvictsTheLeastRecentlyUsedShape) {
  REQUIRE_CUDA_DEVICE();
  GraphTwins twins(RandomModel(TinyConfig(64, 4, 2, 2, 200, 96), 13), SmallPool());
  ASSERT_TRUE(twins.eager && twins.graphs);
  constexpr int kShapes = 40;  // more than the cache holds
  std::vector<int32_t> all;
  for (int i = 0; i < kShapes; ++i) {
    twins.AddCache({.sinks = 2, .window = 16, .ring = 16});
    all.push_back(i);
  }
  // Batch sizes 1..40, each twice: 40 captures, the oldest evicted on the way.
  for (int n = 1; n <= kShapes; ++n) {
    const std::vector<int32_t> first(all.begin(), all.begin() + n);
    twins.Step(first, 1, 1000 + 2 * n);
    twins.Step(first, 1, 1001 + 2 * n);
  }
  EXPECT_EQ(twins.graphs->stats().graph_captures, kShapes);
  // Batch size 1 was evicted: it is captured again, and still right.
  twins.Step({0}, 1, 5000);
  EXPECT_EQ(twins.graphs->stats().graph_captures, kShapes + 1);
  EXPECT_EQ(twins.graphs->stats().graph_launches, kShapes + 1);
}

TEST(CudaBackendTest, RejectsTheSameBatchesAsCpuWithTheSameMessages) {
  REQUIRE_CUDA_DEVICE();
  const Model model = RandomModel(TinyConfig(), 3);
  auto cpu = MakeCpu(model);
  auto gpu = MakeCuda(model, SmallPool());
  ASSERT_TRUE(cpu && gpu);
  const CacheGeometry g{.sinks = 2, .window = 8, .ring = 11};  // chunks up to 4
  ASSERT_EQ(*cpu->CreateCache(g), *gpu->CreateCache(g));
  std::vector<Batch> bad(6);
  bad[0].Add(5, 0, {1});                       // unknown cache
  bad[1].Add(0, 0, {1}), bad[1].Add(0, 1, {2});  // twice
  bad[2].Add(0, 3, {1});                       // wrong n_past
  bad[3].Add(0, 0, {1, 2, 3, 4, 5});           // chunk too large
  bad[4].Add(0, 0, {1000});                    // token out of range
  bad[5].Add(0, 0, {1});
  bad[5].tokens.push_back(2);                  // token nobody owns
  for (size_t i = 0; i < bad.size(); ++i) {
    std::vector<float> a, b;
    const absl::Status sc = cpu->Forward(bad[i], &a), sg = gpu->Forward(bad[i], &b);
    EXPECT_EQ(sc.code(), absl::StatusCode::kInvalidArgument) << i;
    EXPECT_EQ(sc, sg) << "batch " << i;
  }
  EXPECT_EQ(cpu->CreateCache({.sinks = -1, .window = 1, .ring = 1}).status(),
            gpu->CreateCache({.sinks = -1, .window = 1, .ring = 1}).status());
  // Nothing was appended: a valid first step still works.
  Batch ok;
  ok.Add(0, 0, {1, 2});
  std::vector<float> a, b;
  ASSERT_TRUE(cpu->Forward(ok, &a).ok());
  ASSERT_TRUE(gpu->Forward(ok, &b).ok());
  EXPECT_LE(WorstRowError(b, a, model.config.vocab_size), 1e-2);
}

TEST(CudaBackendTest, FullPoolRefusesAdmissionCleanlyAndFreesOnDestroy) {
  REQUIRE_CUDA_DEVICE();
  const Model model = RandomModel(TinyConfig(), 4);
  const CacheGeometry g{.sinks = 4, .window = 1000, .ring = 1000};
  CudaBackendConfig config = SmallPool();
  auto probe = MakeCuda(model, config);
  ASSERT_TRUE(probe);
  const int64_t bytes = probe->CacheBytes(g);
  probe.reset();
  config.gpu_memory_gib = 3.5 * bytes / double(1 << 30);  // room for 3 caches
  auto gpu = MakeCuda(model, config);
  ASSERT_TRUE(gpu);
  std::vector<CacheId> ids;
  for (int i = 0; i < 3; ++i) {
    auto id = gpu->CreateCache(g);
    ASSERT_TRUE(id.ok()) << id.status();
    ids.push_back(*id);
  }
  auto full = gpu->CreateCache(g);
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted) << full.status();
  // The live caches still run.
  Batch batch;
  for (CacheId id : ids) batch.Add(id, 0, {1, 2, 3});
  std::vector<float> logits;
  ASSERT_TRUE(gpu->Forward(batch, &logits).ok());
  gpu->DestroyCache(ids[1]);
  EXPECT_TRUE(gpu->CreateCache(g).ok());
}

TEST(CudaBackendTest, ExportedCacheImportsIntoAFreshOneBitwise) {
  REQUIRE_CUDA_DEVICE();
  auto gpu = MakeCuda(RandomModel(TinyConfig(64, 8, 2, 2, 100, 160), 14), SmallPool());
  ASSERT_TRUE(gpu);
  testing::ExpectExportImportContinuesBitwise(gpu.get(), CacheGeometry{.sinks = 4, .window = 24, .ring = 31});
}

TEST(CudaBackendTest, GreedyOnDeviceEqualsArgmaxOfCopiedLogits) {
  REQUIRE_CUDA_DEVICE();
  const Model model = RandomModel(TinyConfig(64, 4, 2, 2, 300, 96), 5);
  auto gpu = MakeCuda(model, SmallPool());
  ASSERT_TRUE(gpu);
  const CacheGeometry g{.sinks = 2, .window = 16, .ring = 23};
  const CacheId a = *gpu->CreateCache(g), b = *gpu->CreateCache(g);
  // Twin caches fed the same tokens: `a` through Forward, `b` through
  // ForwardGreedy. A prompt chunk with every row, then decode steps.
  std::vector<int32_t> feed = {1, 2, 3, 4, 5, 6, 7, 8};
  int64_t past = 0;
  for (int step = 0; step < 40; ++step) {
    Batch ba, bb;
    ba.Add(a, past, feed, true);
    bb.Add(b, past, feed, true);
    std::vector<float> logits;
    std::vector<int32_t> ids;
    ASSERT_TRUE(gpu->Forward(ba, &logits).ok());
    ASSERT_TRUE(gpu->ForwardGreedy(bb, &ids).ok());
    ASSERT_EQ(ids.size(), feed.size());
    ASSERT_EQ(ids.size() * 300, logits.size());
    for (size_t r = 0; r < ids.size(); ++r) {
      EXPECT_EQ(ids[r], Argmax(absl::MakeConstSpan(&logits[r * 300], 300))) << "step " << step << " row " << r;
    }
    past += static_cast<int64_t>(feed.size());
    feed = {ids.back()};
  }
  // Graphs on (the default): from the second step of each shape on, both
  // the logits path and the device-greedy path replayed a graph.
  EXPECT_EQ(gpu->stats().graph_launches, 2 * (40 - 2));
}

// A model file on both backends through a sink+window cache that wraps many
// times, teacher-forced on the CPU's greedy choice (so one disagreement does
// not derail the rest): top-1 agreement on 99% of rows, worst row error 1e-2.
void ExpectGreedyAgreesWithCpuAcrossWindowWraps(const std::string& file, int32_t sinks, int32_t window) {
  const std::string path = testing::SharedPath(file);
  auto m1 = LoadModel(path);
  auto m2 = LoadModel(path);
  ASSERT_TRUE(m1.ok() && m2.ok());
  const int32_t vocab = m1->config.vocab_size;
  auto cpu = MakeCpu(std::move(*m1));
  auto gpu = MakeCuda(std::move(*m2), SmallPool());
  ASSERT_TRUE(cpu && gpu);
  auto geometry = GeometryFor({CachePolicy::kSinkWindow, sinks, window}, 1, 512);
  ASSERT_TRUE(geometry.ok());
  const CacheId cc = *cpu->CreateCache(*geometry), gc = *gpu->CreateCache(*geometry);
  int32_t token = 1, agree = 0;
  double worst = 0.0;
  constexpr int32_t kTokens = 2000;
  for (int32_t t = 0; t < kTokens; ++t) {
    Batch cb, gb;
    cb.Add(cc, t, {token});
    gb.Add(gc, t, {token});
    std::vector<float> want, got;
    ASSERT_TRUE(cpu->Forward(cb, &want).ok());
    ASSERT_TRUE(gpu->Forward(gb, &got).ok());
    worst = std::max(worst, WorstRowError(got, want, vocab));
    const int32_t next = Argmax(want);
    agree += Argmax(got) == next;
    token = next;
  }
  EXPECT_GE(agree, kTokens * 99 / 100) << "top-1 agreement " << agree << "/" << kTokens;
  EXPECT_LE(worst, 1e-2) << "worst per-row relative logit error";
}

TEST(CudaBackendTest, Stories260KGreedyAgreesWithCpuAcrossWindowWraps) {
  REQUIRE_CUDA_DEVICE();
  REQUIRE_SHARED("models/stories260K/stories260K.bin");
  ExpectGreedyAgreesWithCpuAcrossWindowWraps("models/stories260K/stories260K.bin", 4, 64);
}

// MPT: LayerNorm, GELU, ALiBi over cache positions.
TEST(CudaBackendTest, SynthMptGreedyAgreesWithCpuAcrossWindowWraps) {
  REQUIRE_CUDA_DEVICE();
  REQUIRE_SHARED("models/synthetic/synth-mpt-F32.gguf");
  ExpectGreedyAgreesWithCpuAcrossWindowWraps("models/synthetic/synth-mpt-F32.gguf", 4, 60);
}

TEST(CudaBackendTest, RealisticDimensionsMatchCpu) {
  REQUIRE_CUDA_DEVICE();
  ModelConfig c = TinyConfig(4096, 32, 8, 2, 32000, 14336, 4096);  // head_dim 128, Mistral-like widths
  const Model model = RandomModel(c, 11, 1.0f / 64.0f);
  CudaBackendConfig config = SmallPool();
  config.gpu_memory_gib = 1.0;
  EXPECT_LE(RunMixedBatches(model, config, {CachePolicy::kSinkWindow, 4, 16}, 8, 8).worst, 1e-2)
      << "worst per-row relative logit error";
  config.prefill_min_tokens = 4;  // the 8- and 4-token chunks on the prefill kernel
  EXPECT_LE(RunMixedBatches(model, config, {CachePolicy::kSinkWindow, 4, 16}, 8, 8).worst, 1e-2)
      << "worst per-row relative logit error, tiled prefill";
}

}  // namespace
}  // namespace sinkserve

// The CUDA backend as a whole against the CPU reference backend.
#include "kernels/cuda/cuda_backend.h"

#include <gtest/gtest.h>

#include <cmath>

#include "absl/strings/str_format.h"
#include "engine/model_loader.h"
#include "engine/sampler.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/kernels/cuda/cuda_test_util.h"
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

// Drives several sessions through both backends step by step: session e
// feeds chunks of its own size, so prefill chunks, decode tokens, first
// wraps and multi-lap rings share batches. Returns the worst row error.
double RunMixedBatches(const Model& model, const CudaBackendConfig& config, const CacheConfig& policy,
                       int32_t max_chunk, int32_t steps) {
  auto cpu = MakeCpu(model);
  auto gpu = MakeCuda(model, config);
  if (!cpu || !gpu) return INFINITY;
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
  double worst = 0.0;
  for (int32_t step = 0; step < steps; ++step) {
    Batch cpu_batch, gpu_batch;
    for (size_t e = 0; e < chunk_of.size(); ++e) {
      if ((step + e) % 5 == 4) continue;  // sessions sit out some steps
      const std::vector<int32_t> ids = RandomTokens(chunk_of[e], vocab, step * 31 + e);
      const bool all = e == 0;
      cpu_batch.Add(cpu_ids[e], past[e], ids, all);
      gpu_batch.Add(gpu_ids[e], past[e], ids, all);
      past[e] += chunk_of[e];
    }
    std::vector<float> want, got;
    EXPECT_TRUE(cpu->Forward(cpu_batch, &want).ok());
    absl::Status st = gpu->Forward(gpu_batch, &got);
    EXPECT_TRUE(st.ok()) << st;
    if (!st.ok()) return INFINITY;
    worst = std::max(worst, WorstRowError(got, want, vocab));
  }
  return worst;
}

struct ModelCase {
  const char* name;
  int32_t dim, heads, kv_heads;  // head_dim = dim / heads
  const char* dtype;
  double tolerance;
};

class CudaVsCpuTest : public ::testing::TestWithParam<ModelCase> {};

TEST_P(CudaVsCpuTest, MixedPrefillAndDecodeBatchesMatchCpu) {
  REQUIRE_CUDA_DEVICE();
  const ModelCase& p = GetParam();
  ModelConfig c = TinyConfig(p.dim, p.heads, p.kv_heads, 2, 97, 2 * p.dim + 16);
  const Model model = RandomModel(c, 7, 1.0f / std::sqrt(static_cast<float>(p.dim)));
  const double worst = RunMixedBatches(model, SmallPool(p.dtype), {CachePolicy::kSinkWindow, 3, 13}, 6, 30);
  EXPECT_LE(worst, p.tolerance) << "worst per-row relative logit error";
}

// GQA 1/4/8 with head_dim 8/64/128; bf16 rounds 8x coarser than fp16.
INSTANTIATE_TEST_SUITE_P(
    Models, CudaVsCpuTest,
    ::testing::Values(ModelCase{"hd8_gqa2", 32, 4, 2, "fp16", 1e-2}, ModelCase{"hd64_gqa1", 256, 4, 4, "fp16", 1e-2},
                      ModelCase{"hd64_gqa4", 256, 4, 1, "fp16", 1e-2}, ModelCase{"hd128_gqa8", 1024, 8, 1, "fp16", 1e-2},
                      ModelCase{"hd64_gqa4_bf16", 256, 4, 1, "bf16", 4e-2}),
    [](const auto& info) { return std::string(info.param.name); });

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
}

TEST(CudaBackendTest, Stories260KGreedyAgreesWithCpuAcrossWindowWraps) {
  REQUIRE_CUDA_DEVICE();
  REQUIRE_SHARED("models/stories260K/stories260K.bin");
  const std::string path = testing::SharedPath("models/stories260K/stories260K.bin");
  auto m1 = LoadModel(path);
  auto m2 = LoadModel(path);
  ASSERT_TRUE(m1.ok() && m2.ok());
  const int32_t vocab = m1->config.vocab_size;
  auto cpu = MakeCpu(std::move(*m1));
  auto gpu = MakeCuda(std::move(*m2), SmallPool());
  ASSERT_TRUE(cpu && gpu);
  auto geometry = GeometryFor({CachePolicy::kSinkWindow, 4, 64}, 1, 512);
  ASSERT_TRUE(geometry.ok());
  const CacheId cc = *cpu->CreateCache(*geometry), gc = *gpu->CreateCache(*geometry);
  // Teacher-forced on the CPU's greedy choice, so one disagreement does not
  // derail the rest; counts top-1 agreement and the worst row error.
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

TEST(CudaBackendTest, RealisticDimensionsMatchCpu) {
  REQUIRE_CUDA_DEVICE();
  ModelConfig c = TinyConfig(4096, 32, 8, 2, 32000, 14336, 4096);  // head_dim 128, Mistral-like widths
  const Model model = RandomModel(c, 11, 1.0f / 64.0f);
  CudaBackendConfig config = SmallPool();
  config.gpu_memory_gib = 1.0;
  const double worst = RunMixedBatches(model, config, {CachePolicy::kSinkWindow, 4, 16}, 8, 8);
  EXPECT_LE(worst, 1e-2) << "worst per-row relative logit error";
}

}  // namespace
}  // namespace sinkserve

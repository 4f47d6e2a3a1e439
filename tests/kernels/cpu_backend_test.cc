#include "kernels/cpu/cpu_backend.h"

#include <gtest/gtest.h>

#include <cmath>

#include "engine/model/model_loader.h"
#include "engine/sampler.h"
#include "engine/sequence.h"
#include "tests/golden.h"
#include "tests/cache_export_check.h"
#include "tests/random_model.h"

namespace sinkserve {
namespace {

using testing::GoldenRun;
using testing::RandomModel;
using testing::RandomTokens;
using testing::TinyConfig;

std::unique_ptr<CpuBackend> MakeBackend(Model model, int32_t threads = 2) {
  auto backend = CpuBackend::Create(std::move(model), threads);
  EXPECT_TRUE(backend.ok()) << backend.status();
  return backend.ok() ? std::move(*backend) : nullptr;
}

// Replays a golden run one token per Forward, as run.c does, and checks every
// logits row and every greedy choice.
void ExpectGoldenParity(const std::string& model_path, const GoldenRun& golden, std::vector<float>* all_rows) {
  auto model = LoadModel(model_path);
  ASSERT_TRUE(model.ok()) << model.status();
  const int32_t vocab = model->config.vocab_size;
  auto backend = MakeBackend(std::move(*model));
  CacheConfig dense{CachePolicy::kDense, 0, 0};
  auto seq = Sequence::Create(backend.get(), dense, 1);
  ASSERT_TRUE(seq.ok()) << seq.status();
  const int32_t rows = golden.rows(vocab);
  double worst = 0.0;
  for (int32_t p = 0; p < rows; ++p) {
    ASSERT_TRUE((*seq)->Feed({golden.tokens[p]}).ok());
    absl::Span<const float> got = (*seq)->last_logits();
    all_rows->insert(all_rows->end(), got.begin(), got.end());
    for (int32_t v = 0; v < vocab; ++v) {
      worst = std::max(worst, double{std::abs(got[v] - golden.logits[size_t(p) * vocab + v])});
    }
    if (p + 1 >= static_cast<int32_t>(golden.prompt.size()) && p + 1 < static_cast<int32_t>(golden.tokens.size())) {
      ASSERT_EQ(Argmax(got), golden.tokens[p + 1]) << "greedy choice differs at position " << p + 1;
    }
  }
  EXPECT_LE(worst, 1e-3) << "max |logit - golden| over " << rows << " rows";
}

class GoldenTest : public ::testing::TestWithParam<const char*> {};

TEST_P(GoldenTest, BinAndGgufMatchLlama2cReference) {
  REQUIRE_SHARED("models/stories260K/stories260K.bin");
  REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  REQUIRE_SHARED(std::string("models/golden/") + GetParam() + ".ids");
  GoldenRun golden;
  ASSERT_TRUE(testing::LoadGolden(GetParam(), &golden));
  std::vector<float> from_bin, from_gguf;
  ExpectGoldenParity(testing::SharedPath("models/stories260K/stories260K.bin"), golden, &from_bin);
  ExpectGoldenParity(testing::SharedPath("models/stories260K/stories260K.gguf"), golden, &from_gguf);
  EXPECT_EQ(from_bin, from_gguf) << "the .bin and .gguf must give the same logits";
}

INSTANTIATE_TEST_SUITE_P(Stories260K, GoldenTest, ::testing::ValuesIn(testing::kGoldenCases));

TEST(CpuBackendTest, ChunkedPrefillEqualsTokenByToken) {
  const Model model = RandomModel(TinyConfig(), 1);
  auto backend = MakeBackend(model);
  const std::vector<int32_t> ids = RandomTokens(40, model.config.vocab_size, 2);
  CacheConfig config{CachePolicy::kSinkWindow, 2, 16};
  auto one = Sequence::Create(backend.get(), config, 1);
  auto chunked = Sequence::Create(backend.get(), config, 8);
  ASSERT_TRUE(one.ok() && chunked.ok());
  std::vector<float> rows_one, rows_chunked;
  for (int32_t id : ids) {
    ASSERT_TRUE((*one)->Feed({id}).ok());
    rows_one.insert(rows_one.end(), (*one)->last_logits().begin(), (*one)->last_logits().end());
  }
  ASSERT_TRUE((*chunked)->Feed(ids, &rows_chunked).ok());
  ASSERT_EQ(rows_one.size(), rows_chunked.size());
  for (size_t i = 0; i < rows_one.size(); ++i) ASSERT_NEAR(rows_one[i], rows_chunked[i], 1e-5) << i;
}

TEST(CpuBackendTest, SinkWindowEqualsDenseWhileEverythingFits) {
  const Model model = RandomModel(TinyConfig(), 3);
  auto backend = MakeBackend(model);
  const std::vector<int32_t> ids = RandomTokens(60, model.config.vocab_size, 4);
  std::vector<float> dense_rows, sink_rows, window_rows;
  auto run = [&](CacheConfig config, std::vector<float>* rows) {
    auto seq = Sequence::Create(backend.get(), config, 16);
    ASSERT_TRUE(seq.ok()) << seq.status();
    ASSERT_TRUE((*seq)->Feed(ids, rows).ok());
  };
  run({CachePolicy::kDense, 0, 0}, &dense_rows);
  run({CachePolicy::kSinkWindow, 4, 56}, &sink_rows);  // S + W = 60 covers every token
  run({CachePolicy::kWindow, 0, 60}, &window_rows);
  EXPECT_EQ(sink_rows, dense_rows);
  EXPECT_EQ(window_rows, dense_rows);
}

TEST(CpuBackendTest, ThreadCountDoesNotChangeResults) {
  const Model model = RandomModel(TinyConfig(64, 8, 2, 2, 100, 160), 5);
  const std::vector<int32_t> ids = RandomTokens(50, model.config.vocab_size, 6);
  std::vector<float> rows[2];
  for (int threads : {1, 2}) {
    auto backend = MakeBackend(model, threads);
    auto seq = Sequence::Create(backend.get(), {CachePolicy::kSinkWindow, 4, 20}, 16);
    ASSERT_TRUE(seq.ok());
    ASSERT_TRUE((*seq)->Feed(ids, &rows[threads - 1]).ok());
  }
  EXPECT_EQ(rows[0], rows[1]);
}

// Batching changes nothing, bit for bit: a sequence's logits are the same
// alone and inside batches of any size, on one thread or two (the pool then
// runs whole slices of sequences per thread, or splits each op).
TEST(CpuBackendTest, BatchingIsBitwiseInvariant) {
  const Model model = RandomModel(TinyConfig(64, 8, 2, 2, 100, 172), 8);
  const CacheGeometry g{2, 8, 8 + 6 - 1};
  constexpr int kSeqs = 17;
  // Sequence i brings 1 + i % 6 prompt tokens, then decodes 3 tokens.
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < kSeqs; ++i) prompts.push_back(RandomTokens(1 + i % 6, 100, 100 + i));

  // Logits of every step of every sequence, run with `together` sequences per batch.
  auto run = [&](int32_t threads, int together) {
    auto backend = MakeBackend(model, threads);
    std::vector<CacheId> ids;
    for (int i = 0; i < kSeqs; ++i) ids.push_back(*backend->CreateCache(g));
    std::vector<std::vector<float>> rows(kSeqs);
    std::vector<float> logits;
    for (int step = 0; step < 4; ++step) {
      for (int first = 0; first < kSeqs; first += together) {
        Batch batch;
        for (int i = first; i < std::min(kSeqs, first + together); ++i) {
          const int64_t past = step == 0 ? 0 : static_cast<int64_t>(prompts[i].size()) + step - 1;
          const std::vector<int32_t> toks = step == 0 ? prompts[i] : std::vector<int32_t>{(i * 7 + step) % 100};
          batch.Add(ids[i], past, toks, /*all_logits=*/step == 0);
        }
        EXPECT_TRUE(backend->Forward(batch, &logits).ok());
        size_t offset = 0;
        for (const SeqEntry& e : batch.seqs) {
          const size_t n = (e.all_logits ? e.n_tokens : 1) * size_t{100};
          const int i = static_cast<int>(std::find(ids.begin(), ids.end(), e.cache) - ids.begin());
          rows[i].insert(rows[i].end(), logits.begin() + offset, logits.begin() + offset + n);
          offset += n;
        }
      }
    }
    return rows;
  };
  const auto alone = run(1, 1);
  for (auto [threads, together] : {std::pair{1, 5}, {2, 1}, {2, 2}, {2, 3}, {2, 16}, {2, 17}, {3, 17}}) {
    EXPECT_EQ(run(threads, together), alone) << "threads=" << threads << " batch=" << together;
  }
}

TEST(CpuBackendTest, ExportedCacheImportsIntoAFreshOneBitwise) {
  auto backend = MakeBackend(RandomModel(TinyConfig(64, 8, 2, 2, 100, 160), 14));
  testing::ExpectExportImportContinuesBitwise(backend.get(), CacheGeometry{.sinks = 4, .window = 24, .ring = 31});
  // Before the ring is full only the slots in use travel.
  auto fresh = backend->CreateCache(CacheGeometry{.sinks = 4, .window = 24, .ring = 31});
  ASSERT_TRUE(fresh.ok());
  auto empty = backend->ExportCache(*fresh);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

TEST(CpuBackendTest, RejectsMalformedBatches) {
  const Model model = RandomModel(TinyConfig(), 11);
  auto backend = MakeBackend(model);
  const CacheId cache = *backend->CreateCache({0, 4, 5});  // chunks of at most 2
  std::vector<float> logits;
  auto forward = [&](CacheId id, int64_t n_past, std::vector<int32_t> toks) {
    Batch b;
    b.Add(id, n_past, toks);
    return backend->Forward(b, &logits);
  };
  EXPECT_EQ(forward(cache, 0, {64}).code(), absl::StatusCode::kInvalidArgument);   // id out of range
  EXPECT_EQ(forward(cache, 0, {-1}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(forward(cache, 3, {1}).code(), absl::StatusCode::kInvalidArgument);    // wrong n_past
  EXPECT_EQ(forward(cache, 0, {1, 2, 3}).code(), absl::StatusCode::kInvalidArgument);  // chunk too big
  EXPECT_EQ(forward(cache + 7, 0, {1}).code(), absl::StatusCode::kInvalidArgument);  // unknown cache
  Batch twice;
  twice.Add(cache, 0, std::vector<int32_t>{1});
  twice.Add(cache, 0, std::vector<int32_t>{2});
  EXPECT_EQ(backend->Forward(twice, &logits).code(), absl::StatusCode::kInvalidArgument);
  // Nothing was appended by the failures: a valid step at n_past 0 works.
  EXPECT_TRUE(forward(cache, 0, {1, 2}).ok());
  EXPECT_FALSE(backend->CreateCache({0, 0, 0}).ok());
}

// Contrastive candidates: each candidate row is what feeding that token next
// would give (logits and hidden state), the cache is untouched until one is
// committed, and a committed candidate continues exactly like the fed token.
// In one batch with another session's prefill and decode, across ring wraps,
// with RoPE (GQA) and with ALiBi.
void ExpectCandidatesActLikeTheFedToken(ModelConfig config) {
  const Model model = RandomModel(config, 21);
  const int32_t vocab = config.vocab_size, dim = config.dim;
  auto backend = MakeBackend(model);
  const CacheGeometry g{2, 8, 8 + 4 - 1};
  const std::vector<int32_t> prefix = RandomTokens(29, vocab, 5);  // wraps the ring twice
  const std::vector<int32_t> candidates = {3, 17, 3, 42};         // a repeat too
  // A cache fed `prefix`, then `extra` (may be empty), one token per step.
  auto fed = [&](const std::vector<int32_t>& extra) {
    const CacheId id = *backend->CreateCache(g);
    std::vector<float> logits;
    int64_t past = 0;
    for (int32_t tok : prefix) {
      Batch b;
      b.Add(id, past++, {tok});
      EXPECT_TRUE(backend->Forward(b, &logits).ok());
    }
    for (int32_t tok : extra) {
      Batch b;
      b.Add(id, past++, {tok});
      EXPECT_TRUE(backend->Forward(b, &logits).ok());
    }
    return id;
  };
  const CacheId contrastive = fed({});
  const CacheId other = *backend->CreateCache(g);
  Batch batch;
  batch.Add(other, 0, RandomTokens(3, vocab, 6));
  batch.AddCandidates(contrastive, static_cast<int64_t>(prefix.size()), candidates);
  std::vector<float> logits, hidden;
  ASSERT_TRUE(backend->Forward(batch, &logits, &hidden).ok());
  ASSERT_EQ(logits.size(), (1 + candidates.size()) * vocab);
  ASSERT_EQ(hidden.size(), (3 + candidates.size()) * dim);
  for (size_t i = 0; i < candidates.size(); ++i) {
    const CacheId alone = fed({});
    Batch b;
    b.Add(alone, static_cast<int64_t>(prefix.size()), {candidates[i]});
    std::vector<float> want, want_hidden;
    ASSERT_TRUE(backend->Forward(b, &want, &want_hidden).ok());
    for (int32_t v = 0; v < vocab; ++v) {
      ASSERT_NEAR(logits[(1 + i) * vocab + v], want[v], 1e-4f * (1 + std::abs(want[v]))) << "candidate " << i;
    }
    for (int32_t d = 0; d < dim; ++d) {
      ASSERT_NEAR(hidden[(3 + i) * dim + d], want_hidden[d], 1e-4f * (1 + std::abs(want_hidden[d]))) << i;
    }
    backend->DestroyCache(alone);
  }
  // Candidates are not appended: another candidates step at the same n_past works.
  Batch again;
  again.AddCandidates(contrastive, static_cast<int64_t>(prefix.size()), {candidates[1], candidates[3]});
  ASSERT_TRUE(backend->Forward(again, &logits).ok());
  EXPECT_EQ(backend->CommitCandidate(contrastive, 2).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(backend->CommitCandidate(contrastive, 1).ok());  // candidates[3]
  EXPECT_EQ(backend->CommitCandidate(contrastive, 0).code(), absl::StatusCode::kFailedPrecondition);
  // The committed candidate continues like the fed token, for several steps.
  const CacheId reference = fed({candidates[3]});
  for (int step = 0; step < 12; ++step) {
    const int32_t tok = (step * 13 + 1) % vocab;
    const int64_t past = static_cast<int64_t>(prefix.size()) + 1 + step;
    Batch a, b;
    a.Add(contrastive, past, {tok});
    b.Add(reference, past, {tok});
    std::vector<float> got, want;
    ASSERT_TRUE(backend->Forward(a, &got).ok());
    ASSERT_TRUE(backend->Forward(b, &want).ok());
    for (int32_t v = 0; v < vocab; ++v) ASSERT_NEAR(got[v], want[v], 1e-4f * (1 + std::abs(want[v]))) << step;
  }
}

TEST(CpuBackendTest, CandidatesActLikeTheFedTokenWithRope) {
  ExpectCandidatesActLikeTheFedToken(TinyConfig(64, 8, 2, 2, 100, 172));
}

TEST(CpuBackendTest, CandidatesActLikeTheFedTokenWithAlibi) {
  ModelConfig c = TinyConfig(64, 8, 8, 2, 100, 172);
  c.positions = PositionKind::kAlibi;
  c.max_alibi_bias = 8.0f;
  ExpectCandidatesActLikeTheFedToken(c);
}

TEST(CpuBackendTest, CandidateEntriesAreBounded) {
  auto backend = MakeBackend(RandomModel(TinyConfig(), 11));
  const CacheId cache = *backend->CreateCache({0, 4, 5});
  std::vector<float> logits;
  Batch too_many;
  too_many.AddCandidates(cache, 0, std::vector<int32_t>(kMaxCandidates + 1, 1));
  EXPECT_EQ(backend->Forward(too_many, &logits).code(), absl::StatusCode::kInvalidArgument);
  Batch no_rows;
  no_rows.AddCandidates(cache, 0, std::vector<int32_t>{1, 2});
  no_rows.seqs.back().all_logits = false;
  EXPECT_EQ(backend->Forward(no_rows, &logits).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(backend->CommitCandidate(cache, 0).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(backend->CommitCandidate(cache + 9, 0).code(), absl::StatusCode::kNotFound);
}

TEST(SequenceTest, DenseFailsClearlyWhenTheContextIsFull) {
  const Model model = RandomModel(TinyConfig(32, 4, 2, 1, 64, 48, /*context=*/10), 12);
  auto backend = MakeBackend(model);
  auto seq = Sequence::Create(backend.get(), {CachePolicy::kDense, 0, 0}, 4);
  ASSERT_TRUE(seq.ok());
  ASSERT_TRUE((*seq)->Feed(RandomTokens(8, 64, 1)).ok());
  absl::Status full = (*seq)->Feed(RandomTokens(3, 64, 2));
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(full.message().find("context of 10"), absl::string_view::npos) << full;
  EXPECT_EQ((*seq)->consumed(), 8);  // the failed feed ran nothing
  EXPECT_TRUE((*seq)->Feed(RandomTokens(2, 64, 3)).ok());
}

TEST(SequenceTest, RecomputeEqualsAFreshDenseRunOverTheWindow) {
  const Model model = RandomModel(TinyConfig(), 13);
  auto backend = MakeBackend(model);
  const std::vector<int32_t> ids = RandomTokens(30, 64, 14);
  const int32_t W = 8;
  auto seq = Sequence::Create(backend.get(), {CachePolicy::kRecompute, 0, W}, 4);
  ASSERT_TRUE(seq.ok());
  std::vector<float> rows;
  ASSERT_TRUE((*seq)->Feed(ids, &rows).ok());
  for (int t : {3, 7, 8, 20, 29}) {
    // Logits at token t = a fresh dense pass over tokens max(0, t-W+1)..t.
    const int begin = std::max(0, t - W + 1);
    auto fresh = Sequence::Create(backend.get(), {CachePolicy::kDense, 0, 0}, 4);
    ASSERT_TRUE((*fresh)->Feed(absl::MakeConstSpan(ids).subspan(begin, t - begin + 1)).ok());
    for (int v = 0; v < 64; ++v) ASSERT_NEAR(rows[size_t(t) * 64 + v], (*fresh)->last_logits()[v], 1e-5);
  }
}

}  // namespace
}  // namespace sinkserve

// Contrastive search through the server: a contrastive session is a decode
// of k candidate rows in the continuous batch, and batching changes nothing:
// its ids equal sinkserve-generate's with the same settings, with greedy
// sessions prefilling and decoding in the same steps. Bad settings
// end the turn with a clear error and the session goes on.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <thread>

#include "tests/server/test_server.h"

namespace sinkserve::testing {
namespace {

using ::testing::HasSubstr;

constexpr uint32_t kNewTokens = 100;
constexpr int kSinks = 4;
constexpr int kWindow = 40;  // 100 new tokens wrap the window

const std::vector<std::string>& Prompts() {
  static const auto* prompts = new std::vector<std::string>{
      "Once upon a time",
      "Tom and Lily went to the park. They saw a big dog.",
      "The sun",
  };
  return *prompts;
}

v1::SamplingParams Contrastive(int top_k) {
  v1::SamplingParams p;
  p.set_penalty_alpha(0.6f);
  p.set_top_k(top_k);
  return p;
}

std::string ContrastiveFlags(int top_k) { return absl::StrFormat("--penalty-alpha 0.6 --top-k %d", top_k); }

TEST(ContrastiveServerTest, BatchedWithGreedySessionsMatchesGenerate) {
  REQUIRE_SHARED(kModel);
  if (!std::filesystem::exists(BinaryPath("sinkserve-generate"))) GTEST_SKIP() << "sinkserve-generate not built";
  std::vector<std::vector<uint32_t>> contrastive, greedy;
  for (size_t i = 0; i < Prompts().size(); ++i) {
    const int k = 4 + static_cast<int>(i % 2);
    contrastive.push_back(GenerateIds(Prompts()[i], kNewTokens, kSinks, kWindow, ContrastiveFlags(k)));
    greedy.push_back(GenerateIds(Prompts()[i], kNewTokens, kSinks, kWindow));
    ASSERT_EQ(contrastive.back().size(), kNewTokens) << "generate's contrastive run ended early: " << Prompts()[i];
    ASSERT_NE(contrastive.back(), greedy.back()) << "contrastive should differ from greedy here";
  }
  EngineConfig config;
  config.scheduler.step_token_budget = 24;  // prefill chunks split and interleaved with the candidates
  START_SERVER(s, config);
  constexpr int kSessions = 12;  // half contrastive, half greedy
  std::vector<std::vector<uint32_t>> got(kSessions);
  std::vector<std::thread> threads;
  for (int i = 0; i < kSessions; ++i) {
    threads.emplace_back([&, i] {
      const size_t p = static_cast<size_t>(i / 2) % Prompts().size();
      const int k = 4 + static_cast<int>(p % 2);
      got[i] = GrpcIds(s, Prompts()[p], kNewTokens, kSinks, kWindow, i % 2 == 0 ? Contrastive(k) : v1::SamplingParams());
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kSessions; ++i) {
    const size_t p = static_cast<size_t>(i / 2) % Prompts().size();
    EXPECT_EQ(got[i], i % 2 == 0 ? contrastive[p] : greedy[p]) << "session " << i << (i % 2 == 0 ? " (contrastive)" : " (greedy)");
  }
}

// Two turns, the first greedy, the second contrastive: its candidates compare
// with the hidden states the ring kept from the first turn's tokens. The
// same two turns on another session give the same ids.
TEST(ContrastiveServerTest, ALaterContrastiveTurnIsDeterministic) {
  START_SERVER(s, EngineConfig{});
  auto run = [&] {
    RawStream c(s.stub());
    std::string id;
    v1::CacheConfig cache;
    cache.set_policy(v1::CACHE_POLICY_SINK_WINDOW);
    cache.set_sink_tokens(kSinks);
    cache.set_window_tokens(kWindow);
    EXPECT_TRUE(c.OpenAttached(&id, cache));
    v1::TurnDone done;
    EXPECT_TRUE(c.Turn("Once upon a time", 30, /*ignore_eos=*/true));
    EXPECT_TRUE(c.ReadDone(&done));
    std::vector<uint32_t> ids;
    EXPECT_TRUE(c.Turn(" The dog", 40, /*ignore_eos=*/true, Contrastive(5)));
    EXPECT_TRUE(c.ReadDone(&done, &ids));
    EXPECT_EQ(done.reason(), v1::FINISH_REASON_LENGTH) << done.error();
    c.Finish();
    return ids;
  };
  const std::vector<uint32_t> a = run(), b = run();
  EXPECT_EQ(a.size(), 40u);
  EXPECT_EQ(a, b);
}

TEST(ContrastiveServerTest, BadSettingsEndTheTurnWithAClearError) {
  START_SERVER(s, EngineConfig{});
  RawStream c(s.stub());
  std::string id;
  ASSERT_TRUE(c.OpenAttached(&id));
  struct Case {
    float alpha;
    int top_k;          // < 0: not set (the server's default, 40)
    float temperature;  // < 0: not set
    const char* expect;
  };
  for (const Case& bad : {Case{1.5f, 4, -1, "penalty_alpha must be in [0, 1]"},
                          Case{-0.2f, 4, -1, "penalty_alpha must be in [0, 1]"},
                          Case{0.6f, 0, -1, "needs top_k in 1..64"},
                          Case{0.6f, 100, -1, "needs top_k in 1..64"},
                          Case{0.6f, 4, 0.7f, "takes no temperature"}}) {
    v1::ChatRequest r;
    v1::Turn* t = r.mutable_turn();
    t->set_text("Once");
    t->set_raw(true);
    t->set_max_new_tokens(4);
    t->mutable_sampling()->set_penalty_alpha(bad.alpha);
    if (bad.top_k >= 0) t->mutable_sampling()->set_top_k(bad.top_k);
    if (bad.temperature >= 0) t->mutable_sampling()->set_temperature(bad.temperature);
    ASSERT_TRUE(c.Write(r));
    v1::TurnDone done;
    ASSERT_TRUE(c.ReadDone(&done));
    EXPECT_EQ(done.reason(), v1::FINISH_REASON_ERROR) << bad.expect;
    EXPECT_THAT(done.error(), HasSubstr(bad.expect));
  }
  // The session still takes a good contrastive turn; without a temperature
  // the server's default (0.8) gives way to greedy contrastive search.
  v1::ChatRequest good;
  good.mutable_turn()->set_text("Once");
  good.mutable_turn()->set_raw(true);
  good.mutable_turn()->set_max_new_tokens(8);
  good.mutable_turn()->set_ignore_eos(true);
  *good.mutable_turn()->mutable_sampling() = Contrastive(3);
  ASSERT_TRUE(c.Write(good));
  v1::TurnDone done;
  std::vector<uint32_t> ids;
  ASSERT_TRUE(c.ReadDone(&done, &ids));
  EXPECT_EQ(done.reason(), v1::FINISH_REASON_LENGTH) << done.error();
  EXPECT_EQ(ids.size(), 8u);
  c.Finish();
}

}  // namespace
}  // namespace sinkserve::testing

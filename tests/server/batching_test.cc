// Acceptance: batching changes nothing. A greedy turn through the server
// yields exactly the ids sinkserve-generate prints with the same cache
// settings, for one session and for 16 concurrent ones whose prefill chunks
// and decode tokens share steps.
#include <gtest/gtest.h>

#include <cstdio>
#include <sstream>
#include <thread>

#include "absl/strings/str_format.h"
#include "tests/server/test_server.h"

namespace sinkserve::testing {
namespace {

constexpr uint32_t kNewTokens = 120;
constexpr int kSinks = 4;
constexpr int kWindow = 48;  // small, so 120 new tokens wrap the window twice

// Prompts of different lengths; the last is longer than the 64-token chunk.
const std::vector<std::string>& Prompts() {
  static const auto* prompts = new std::vector<std::string>{
      "Once upon a time",
      "Tom and Lily went to the park. They saw a big dog.",
      "The sun",
      "One day, a little bird flew over the tall trees and the blue river. It was looking for food for its "
      "babies. The bird saw a red apple on the ground near a big house, and a cat was sleeping next to it. "
      "The bird was scared of the cat.",
  };
  return *prompts;
}

std::vector<uint32_t> ServerIds(TestServer& s, const std::string& prompt) {
  return GrpcIds(s, prompt, kNewTokens, kSinks, kWindow);
}

class BatchingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    REQUIRE_SHARED(kModel);
    if (!std::filesystem::exists(BinaryPath("sinkserve-generate"))) GTEST_SKIP() << "sinkserve-generate not built";
    for (const std::string& p : Prompts()) {
      expected_.push_back(GenerateIds(p, kNewTokens, kSinks, kWindow));
      ASSERT_FALSE(expected_.back().empty()) << "sinkserve-generate printed no ids for: " << p;
    }
  }
  std::vector<std::vector<uint32_t>> expected_;
};

TEST_F(BatchingTest, OneSessionMatchesGenerate) {
  START_SERVER(s, EngineConfig{});
  for (size_t i = 0; i < Prompts().size(); ++i) {
    EXPECT_EQ(ServerIds(s, Prompts()[i]), expected_[i]) << Prompts()[i];
  }
}

TEST_F(BatchingTest, SixteenConcurrentSessionsMatchGenerate) {
  EngineConfig config;
  // A budget below 16 decodes + a chunk forces prefill to be split and
  // interleaved with other sessions' decode tokens.
  config.scheduler.step_token_budget = 40;
  START_SERVER(s, config);
  constexpr int kSessions = 16;
  std::vector<std::vector<uint32_t>> got(kSessions);
  std::vector<std::thread> threads;
  for (int i = 0; i < kSessions; ++i) {
    threads.emplace_back([&, i] { got[i] = ServerIds(s, Prompts()[i % Prompts().size()]); });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kSessions; ++i) {
    EXPECT_EQ(got[i], expected_[i % Prompts().size()]) << "session " << i;
  }
  EXPECT_GT(s.engine()->stats().steps, 0);
}

}  // namespace
}  // namespace sinkserve::testing

#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "engine/text/stop_matcher.h"

namespace sinkserve {
namespace {

SamplingParams Params(float temperature, int top_k = 0, float top_p = 1.0f, float min_p = 0.0f) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_k = top_k;
  p.top_p = top_p;
  p.min_p = min_p;
  p.seed = 42;
  p.has_seed = true;
  return p;
}

std::map<int32_t, int> Histogram(const SamplingParams& p, std::vector<float> logits, int draws) {
  Sampler sampler(p, static_cast<int32_t>(logits.size()));
  std::map<int32_t, int> counts;
  for (int i = 0; i < draws; ++i) {
    std::vector<float> copy = logits;
    counts[sampler.Sample(absl::MakeSpan(copy), {})]++;
  }
  return counts;
}

TEST(SamplerTest, GreedyPicksTheFirstMaximum) {
  Sampler s(Params(0.0f), 4);
  std::vector<float> logits = {1.0f, 3.0f, 3.0f, -2.0f};
  EXPECT_EQ(s.Sample(absl::MakeSpan(logits), {}), 1);
}

TEST(SamplerTest, TopKOneIsGreedy) {
  auto counts = Histogram(Params(1.5f, 1), {0.1f, 0.5f, 2.0f, 0.3f}, 200);
  EXPECT_EQ(counts.size(), 1u);
  EXPECT_EQ(counts.begin()->first, 2);
}

TEST(SamplerTest, TopKTwoNeverLeavesTheTopTwo) {
  auto counts = Histogram(Params(5.0f, 2), {0.0f, 1.0f, 1.1f, 0.9f}, 2000);
  for (auto [id, n] : counts) EXPECT_TRUE(id == 1 || id == 2) << id;
  EXPECT_GT(counts[1], 500);  // high temperature: both well represented
  EXPECT_GT(counts[2], 500);
}

TEST(SamplerTest, TemperatureOneFollowsTheSoftmax) {
  // p = softmax(log 0.2, log 0.3, log 0.5)
  auto counts = Histogram(Params(1.0f), {std::log(0.2f), std::log(0.3f), std::log(0.5f)}, 20000);
  EXPECT_NEAR(counts[0] / 20000.0, 0.2, 0.02);
  EXPECT_NEAR(counts[1] / 20000.0, 0.3, 0.02);
  EXPECT_NEAR(counts[2] / 20000.0, 0.5, 0.02);
}

TEST(SamplerTest, TopPKeepsTheSmallestNucleus) {
  // probs 0.5, 0.3, 0.2: top_p 0.7 keeps {0.5, 0.3}.
  auto counts = Histogram(Params(1.0f, 0, 0.7f), {std::log(0.5f), std::log(0.3f), std::log(0.2f)}, 5000);
  EXPECT_EQ(counts.count(2), 0u);
  EXPECT_NEAR(counts[0] / 5000.0, 0.5 / 0.8, 0.03);
}

TEST(SamplerTest, MinPDropsUnlikelyTokens) {
  // probs 0.6, 0.3, 0.1: min_p 0.4 keeps p >= 0.24, so {0.6, 0.3}.
  auto counts = Histogram(Params(1.0f, 0, 1.0f, 0.4f), {std::log(0.6f), std::log(0.3f), std::log(0.1f)}, 5000);
  EXPECT_EQ(counts.count(2), 0u);
  EXPECT_GT(counts[1], 1000);
}

TEST(SamplerTest, SameSeedSameStream) {
  std::vector<float> logits = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f};
  Sampler a(Params(1.0f), 5), b(Params(1.0f), 5);
  for (int i = 0; i < 50; ++i) {
    std::vector<float> x = logits, y = logits;
    ASSERT_EQ(a.Sample(absl::MakeSpan(x), {}), b.Sample(absl::MakeSpan(y), {}));
  }
}

TEST(SamplerTest, RepetitionPenaltyAppliesOncePerDistinctToken) {
  SamplingParams p = Params(0.0f);
  p.repetition_penalty = 2.0f;
  Sampler s(p, 3);
  std::vector<float> logits = {4.0f, 3.0f, -1.0f};
  const std::vector<int32_t> recent = {0, 0, 0, 2};
  EXPECT_EQ(s.Sample(absl::MakeSpan(logits), recent), 1);  // 4 -> 2 (once), 3 stays
  EXPECT_FLOAT_EQ(logits[0], 2.0f);
  EXPECT_FLOAT_EQ(logits[2], -2.0f);
}

TEST(SamplerTest, ValidateRejectsBadValues) {
  for (SamplingParams p : {Params(-1.0f), Params(NAN), Params(1.0f, -3), Params(1.0f, 0, 0.0f),
                           Params(1.0f, 0, NAN), Params(1.0f, 0, 1.5f), Params(1.0f, 0, 1.0f, -0.1f),
                           Params(INFINITY)}) {
    EXPECT_EQ(p.Validate().code(), absl::StatusCode::kInvalidArgument);
  }
  SamplingParams p = Params(1.0f);
  p.repetition_penalty = 0.0f;
  EXPECT_FALSE(p.Validate().ok());
  EXPECT_TRUE(Params(0.7f, 40, 0.9f, 0.05f).Validate().ok());
}

TEST(StopMatcherTest, HoldsBackPossiblePrefixesAndCutsAtTheStop) {
  StopMatcher m({"\nUser:", "END"});
  bool stopped = false;
  EXPECT_EQ(m.Push("Hello", &stopped), "Hello");
  EXPECT_EQ(m.Push(" there\nUs", &stopped), " there");  // "\nUs" might start "\nUser:"
  EXPECT_FALSE(stopped);
  EXPECT_EQ(m.Push("e", &stopped), "");
  EXPECT_EQ(m.Push("r: more", &stopped), "");
  EXPECT_TRUE(stopped);
}

TEST(StopMatcherTest, ReleasesAFalseAlarm) {
  StopMatcher m({"END"});
  bool stopped = false;
  EXPECT_EQ(m.Push("the EN", &stopped), "the ");
  EXPECT_EQ(m.Push("D!", &stopped), "");
  EXPECT_TRUE(stopped);
  StopMatcher n({"END"});
  EXPECT_EQ(n.Push("EN", &stopped), "");
  EXPECT_EQ(n.Push("ough", &stopped), "ENough");
  EXPECT_FALSE(stopped);
  EXPECT_EQ(n.Push("E", &stopped), "");
  EXPECT_EQ(n.Flush(), "E");
}

TEST(StopMatcherTest, NoStopsPassesEverythingThrough) {
  StopMatcher m({});
  bool stopped = true;
  EXPECT_EQ(m.Push("abc", &stopped), "abc");
  EXPECT_FALSE(stopped);
}

}  // namespace
}  // namespace sinkserve

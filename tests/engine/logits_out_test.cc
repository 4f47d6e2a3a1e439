// sinkserve-perplexity --logits-out against llama.cpp's own logits on the
// synthetic llama fixture (../shared/models/synthetic, made with llama.cpp's
// CPU backend): one fp32 row of vocab logits per token, row i after token i.
#include <gtest/gtest.h>


#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/run_tool.h"
#include "tests/test_data.h"

namespace sinkserve {
namespace {

namespace fs = std::filesystem;

const std::string kModel = "models/synthetic/synth-llama-F32.gguf";
const std::string kIds = "models/synthetic/ids128.txt";
const std::string kLogits = "models/synthetic/synth-llama-F32.logits.f32";
constexpr size_t kVocab = 512;

using Result = testing::ToolResult;

class LogitsOutTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_FALSE(tmp_.path().empty()) << "cannot make a temporary directory"; }
  Result Perplexity(std::vector<std::string> extra) {
    std::vector<std::string> args = {"--model", testing::SharedPath(kModel), "--ids-file", testing::SharedPath(kIds),
                                     "--policy", "dense", "--backend", "cpu"};
    args.insert(args.end(), extra.begin(), extra.end());
    return testing::RunTool(tmp_.path(), "sinkserve-perplexity", args);
  }
  std::string Path(const std::string& name) const { return (tmp_.path() / name).string(); }

  testing::ScopedTempDir tmp_;
};

std::vector<float> AsFloats(const std::string& bytes) {
  std::vector<float> v(bytes.size() / sizeof(float));
  if (!v.empty()) std::memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
  return v;
}

// The last line of the perplexity output: "ppl=<value> tokens=<count>".
std::string PplLine(const std::string& out) {
  std::vector<std::string> lines = absl::StrSplit(out, '\n', absl::SkipEmpty());
  return lines.empty() ? "" : lines.back();
}

TEST_F(LogitsOutTest, MatchesLlamaCppOnTheSyntheticLlama) {
  REQUIRE_SHARED(kModel);
  REQUIRE_SHARED(kIds);
  REQUIRE_SHARED(kLogits);
  const Result r = Perplexity({"--logits-out", Path("logits.f32")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<float> got = AsFloats(testing::ReadFile(Path("logits.f32")));
  const std::vector<float> want = AsFloats(testing::ReadFile(testing::SharedPath(kLogits)));
  ASSERT_EQ(want.size(), 128 * kVocab);
  ASSERT_EQ(got.size(), want.size()) << "expected 128 rows of " << kVocab << " logits";
  EXPECT_EQ(PplLine(r.out).rfind("ppl=", 0), 0u) << r.out;
  EXPECT_NE(PplLine(r.out).find(" tokens=128"), std::string::npos) << r.out;

  const size_t rows = want.size() / kVocab;
  double worst = 0.0;
  size_t worst_row = 0, top1_equal = 0;
  for (size_t i = 0; i < rows; ++i) {
    const float* g = got.data() + i * kVocab;
    const float* w = want.data() + i * kVocab;
    const auto [lo, hi] = std::minmax_element(w, w + kVocab);
    double max_diff = 0.0;
    for (size_t j = 0; j < kVocab; ++j) {
      ASSERT_TRUE(std::isfinite(g[j])) << "row " << i << " logit " << j;
      max_diff = std::max(max_diff, std::abs(static_cast<double>(g[j]) - w[j]));
    }
    const double rel = max_diff / std::max(1e-12, static_cast<double>(*hi - *lo));
    if (rel > worst) {
      worst = rel;
      worst_row = i;
    }
    if (std::max_element(g, g + kVocab) - g == hi - w) ++top1_equal;
  }
  RecordProperty("max_rel_diff", std::to_string(worst));
  std::printf("max |ours - llama.cpp| / (row max - row min) = %.3g (row %zu); top-1 equal on %zu/%zu rows\n",
              worst, worst_row, top1_equal, rows);
  EXPECT_LE(worst, 1e-3) << "row " << worst_row;
  EXPECT_GE(top1_equal * 100, rows * 99);
}

TEST_F(LogitsOutTest, ScoringIsUnchangedAndBadPathsFail) {
  REQUIRE_SHARED(kModel);
  REQUIRE_SHARED(kIds);
  const Result with = Perplexity({"--logits-out", Path("logits.f32"), "--max-tokens", "16"});
  const Result without = Perplexity({"--max-tokens", "16"});
  ASSERT_EQ(with.exit_code, 0) << with.err;
  ASSERT_EQ(without.exit_code, 0) << without.err;
  EXPECT_EQ(PplLine(with.out), PplLine(without.out));
  EXPECT_EQ(fs::file_size(Path("logits.f32")), 16 * kVocab * sizeof(float));

  const Result bad = Perplexity({"--logits-out", Path("no/such/dir/logits.f32")});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1) << bad.err;
  EXPECT_NE(bad.err.find("--logits-out"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace sinkserve

// Exactness against llama.cpp on the synthetic fixtures of ../shared/models/
// synthetic (random weights of real layouts, quantized by llama.cpp, with
// llama.cpp's own logits on ids128.txt): every row's logits are compared
// relative to that row's range (max - min), and the top-1 ids must agree.
//   - fp32 files: the CPU backend against llama.cpp's logits, 1e-3.
//   - F16/BF16: 1e-2 (llama.cpp rounds the activations to the weight type).
//   - quantized files, reference path (weights dequantized at load, fp32
//     activations) against llama.cpp's dequantized twin, 1e-3.
//   - quantized files, integer kernels (activations quantized per block, as
//     llama.cpp does) against llama.cpp's logits for the same file: mean 5e-3,
//     max 3e-2, top-1 on 95% of rows.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/model/model_loader.h"
#include "engine/sequence.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/test_data.h"

namespace sinkserve::testing {
namespace {

constexpr char kDir[] = "models/synthetic/";

struct Agreement {
  double max_rel = 0;   // worst |ours - theirs| / row range
  double mean_rel = 0;  // mean over every logit of every row
  double top1 = 0;      // fraction of rows whose argmax agrees
};

std::vector<float> ReadF32(const std::string& path) {
  const std::string bytes = ReadFile(path);
  std::vector<float> v(bytes.size() / 4);
  if (!v.empty()) std::memcpy(v.data(), bytes.data(), v.size() * 4);
  return v;
}

std::vector<int32_t> ReadIds(const std::string& path) {
  std::istringstream in(ReadFile(path));
  std::vector<int32_t> ids;
  int32_t id;
  while (in >> id) ids.push_back(id);
  return ids;
}

Agreement Compare(const std::vector<float>& ours, const std::vector<float>& theirs, int32_t vocab) {
  Agreement a;
  const size_t rows = theirs.size() / vocab;
  double sum = 0;
  int agree = 0;
  for (size_t r = 0; r < rows; ++r) {
    const float* x = &ours[r * vocab];
    const float* y = &theirs[r * vocab];
    const auto [lo, hi] = std::minmax_element(y, y + vocab);
    const double range = std::max(1e-12, static_cast<double>(*hi - *lo));
    for (int32_t i = 0; i < vocab; ++i) {
      const double rel = std::fabs(static_cast<double>(x[i]) - y[i]) / range;
      a.max_rel = std::max(a.max_rel, rel);
      sum += rel;
    }
    agree += std::max_element(x, x + vocab) - x == hi - y;
  }
  a.mean_rel = sum / (static_cast<double>(rows) * vocab);
  a.top1 = static_cast<double>(agree) / static_cast<double>(rows);
  return a;
}

// Every row's logits for ids128.txt from `file` on the CPU backend: dense
// cache, one token after another as llama.cpp's batch saw them.
std::vector<float> Logits(const std::string& file, bool dequantize) {
  auto model = LoadModel(SharedPath(kDir + file));
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return {};
  auto backend = CpuBackend::Create(*std::move(model), /*threads=*/2, dequantize);
  EXPECT_TRUE(backend.ok()) << backend.status();
  if (!backend.ok()) return {};
  auto seq = Sequence::Create(backend->get(), {CachePolicy::kDense, 0, 0}, 64);
  EXPECT_TRUE(seq.ok()) << seq.status();
  if (!seq.ok()) return {};
  std::vector<float> rows;
  const absl::Status fed = (*seq)->Feed(ReadIds(SharedPath(std::string(kDir) + "ids128.txt")), &rows);
  EXPECT_TRUE(fed.ok()) << fed;
  return rows;
}

struct Case {
  std::string file;       // under models/synthetic/, without .gguf
  std::string reference;  // the .logits.f32 it is compared with
  bool dequantize;        // the reference path
  double max_rel, mean_rel, top1;
};

std::string Name(const ::testing::TestParamInfo<Case>& info) {
  std::string name = absl::StrCat(info.param.file, info.param.dequantize ? "_reference" : "_native");
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

class SyntheticModelTest : public ::testing::TestWithParam<Case> {};

TEST_P(SyntheticModelTest, LogitsAgreeWithLlamaCpp) {
  const Case& c = GetParam();
  REQUIRE_SHARED(kDir + c.file + ".gguf");
  REQUIRE_SHARED(kDir + c.reference);
  const std::vector<float> theirs = ReadF32(SharedPath(kDir + c.reference));
  const std::vector<float> ours = Logits(c.file + ".gguf", c.dequantize);
  ASSERT_EQ(ours.size(), theirs.size());
  const Agreement a = Compare(ours, theirs, 512);
  std::cout << "[ agreement ] " << c.file << (c.dequantize ? " reference" : " native") << " vs " << c.reference
            << ": max " << a.max_rel << ", mean " << a.mean_rel << " of the row range, top-1 " << a.top1 << "\n";
  EXPECT_LE(a.max_rel, c.max_rel);
  EXPECT_LE(a.mean_rel, c.mean_rel);
  EXPECT_GE(a.top1, c.top1);
}

Case Exact(const std::string& file) { return {file, file + ".logits.f32", false, 1e-3, 1e-3, 0.99}; }
Case Half(const std::string& file) { return {file, file + ".logits.f32", false, 1e-2, 1e-2, 0.99}; }
Case Reference(const std::string& file) { return {file, file + ".dequant-F32.logits.f32", true, 1e-3, 1e-3, 0.99}; }
Case Native(const std::string& file) { return {file, file + ".logits.f32", false, 3e-2, 5e-3, 0.95}; }

INSTANTIATE_TEST_SUITE_P(
    Files, SyntheticModelTest,
    ::testing::Values(Exact("synth-llama-F32"), Half("synth-llama-F16"), Half("synth-llama-BF16"),
                      Reference("synth-llama-Q8_0"), Reference("synth-llama-Q4_0"),
                      Reference("synth-llama-Q4_K_M"), Reference("synth-llama-Q5_K_M"),
                      Reference("synth-llama-Q6_K"), Native("synth-llama-Q8_0"), Native("synth-llama-Q4_0"),
                      Native("synth-llama-Q4_K_M"), Native("synth-llama-Q5_K_M"), Native("synth-llama-Q6_K"),
                      Exact("synth-qwen2-F32"), Native("synth-qwen2-Q8_0"), Native("synth-qwen2-Q4_K_M"),
                      Exact("synth-mpt-F32"), Native("synth-mpt-Q8_0")),
    Name);

}  // namespace
}  // namespace sinkserve::testing

// The block kernels on fresh random inputs: the SIMD levels against the
// scalar reference, and the reference against fp32 arithmetic on the
// dequantized weights (engine/model/quant.h) and the activations.
#include "kernels/cpu/quant_ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace sinkserve::cpu {
namespace {

// Where each type keeps its fp16 scale fields (d, and m or dmin).
std::vector<int> HalfFields(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_1:
    case GgmlType::kQ5_1:
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K:
      return {0, 2};
    case GgmlType::kQ6_K:
      return {208};
    default:
      return {0};
  }
}

// A (rows, cols) weight of random blocks with sane fp16 scales.
Weight RandomWeight(GgmlType type, int64_t rows, int64_t cols, std::mt19937& rng) {
  const GgmlTypeTraits& t = *FindGgmlType(static_cast<uint32_t>(type));
  std::vector<uint8_t> bytes(static_cast<size_t>(rows * RowBytes(type, cols)));
  std::uniform_int_distribution<int> byte(0, 255);
  for (uint8_t& b : bytes) b = static_cast<uint8_t>(byte(rng));
  std::uniform_real_distribution<float> scale(0.002f, 0.05f);
  if (type == GgmlType::kQ8_0) {
    // Q8_0 weights stay in [-127, 127], as ggml's quantizer makes them.
    for (size_t i = 0; i < bytes.size(); ++i) {
      if (bytes[i] == 0x80) bytes[i] = 0x81;
    }
  }
  for (size_t block = 0; block < bytes.size() / t.block_bytes; ++block) {
    for (int field : HalfFields(type)) {
      const uint16_t h = FloatToHalf(scale(rng));
      std::memcpy(&bytes[block * t.block_bytes + field], &h, 2);
    }
  }
  return Weight::Copy(type, rows, cols, bytes.data());
}

class QuantOpsTest : public ::testing::TestWithParam<GgmlType> {};

TEST_P(QuantOpsTest, SimdLevelsMatchTheReferenceAndTheReferenceMatchesFp32) {
  const GgmlType type = GetParam();
  std::mt19937 rng(1234 + static_cast<int>(type));
  // 25 blocks of 32 (an odd count, for the two-block 512-bit steps), or three
  // blocks of 256.
  constexpr int64_t kRows = 9;
  constexpr int32_t kTokens = 7;
  const int64_t kCols = FindGgmlType(static_cast<uint32_t>(type))->block == 256 ? 768 : 800;
  const Weight w = RandomWeight(type, kRows, kCols, rng);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(kTokens * kCols);
  for (float& v : x) v = normal(rng);
  const int64_t x_bytes = ActivationRowBytes(type, kCols);
  std::vector<uint8_t> xq(kTokens * x_bytes);
  for (int32_t t = 0; t < kTokens; ++t) QuantizeActivations(type, &x[t * kCols], kCols, &xq[t * x_bytes]);

  std::vector<float> reference(kTokens * kRows);
  QuantMatMulReference(reference.data(), kRows, xq.data(), kTokens, w, 0, kRows);

  // fp32 arithmetic on the dequantized weights and activations: the
  // activation rounding (int8 per block) is all that separates them.
  const std::vector<float> wf = w.ToF32();
  // The SIMD levels sum the same integer block dots in another order: their
  // float error scales with the size of the terms, not of the result.
  std::vector<double> tolerance(kTokens * kRows);
  for (int32_t t = 0; t < kTokens; ++t) {
    for (int64_t r = 0; r < kRows; ++r) {
      double exact = 0, magnitude = 0;
      for (int64_t i = 0; i < kCols; ++i) {
        exact += double{wf[r * kCols + i]} * x[t * kCols + i];
        magnitude += std::fabs(double{wf[r * kCols + i]} * x[t * kCols + i]);
      }
      EXPECT_NEAR(reference[t * kRows + r], exact, 0.02 * magnitude) << "token " << t << " row " << r;
      tolerance[t * kRows + r] = 4e-6 * magnitude + 1e-7;
    }
  }
  int levels_run = 0;
  for (int level : {1, 2}) {
    std::vector<float> out(kTokens * kRows, NAN);
    // Rows split in two ranges, as threads split them.
    if (!QuantMatMulAtLevel(level, out.data(), kRows, xq.data(), kTokens, w, 0, 4)) continue;
    ASSERT_TRUE(QuantMatMulAtLevel(level, out.data(), kRows, xq.data(), kTokens, w, 4, kRows));
    ++levels_run;
    for (size_t i = 0; i < out.size(); ++i) {
      EXPECT_NEAR(out[i], reference[i], tolerance[i]) << "level " << level << " at " << i;
    }
    // One token at a time: the batch-1 decode path (512-bit at level 2).
    std::vector<float> single(kTokens * kRows, NAN);
    for (int32_t t = 0; t < kTokens; ++t) {
      ASSERT_TRUE(QuantMatMulAtLevel(level, &single[t * kRows], kRows, &xq[t * x_bytes], 1, w, 0, kRows));
    }
    for (size_t i = 0; i < single.size(); ++i) {
      EXPECT_NEAR(single[i], reference[i], tolerance[i]) << "level " << level << " one token, at " << i;
    }
  }
  std::cout << "[ levels ] " << GgmlTypeName(static_cast<uint32_t>(type)) << ": " << levels_run
            << " SIMD level(s) checked on this CPU\n";
}

INSTANTIATE_TEST_SUITE_P(Types, QuantOpsTest,
                         ::testing::Values(GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ5_0, GgmlType::kQ5_1,
                                           GgmlType::kQ8_0, GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K),
                         [](const ::testing::TestParamInfo<GgmlType>& info) {
                           return GgmlTypeName(static_cast<uint32_t>(info.param));
                         });

TEST(QuantOpsTest, HalfConversionRoundsToNearestEven) {
  for (float f : {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, 6.1035156e-05f, 5.9604645e-08f, 0.1f, 1234.567f}) {
    EXPECT_EQ(HalfToFloat(FloatToHalf(f)), HalfToFloat(FloatToHalf(HalfToFloat(FloatToHalf(f))))) << f;
  }
  EXPECT_EQ(FloatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToHalf(1e6f), 0x7c00);               // overflow to infinity
  EXPECT_EQ(FloatToHalf(1.0f + 1.0f / 2048), 0x3c00);  // a tie rounds to even
  EXPECT_EQ(FloatToHalf(1.0f + 3.0f / 2048), 0x3c02);
  EXPECT_EQ(FloatToHalf(5.9604645e-08f), 0x0001);     // the smallest subnormal
}

}  // namespace
}  // namespace sinkserve::cpu

// The block kernels on fresh random inputs: the SIMD levels against the
// scalar reference, and the reference against fp32 arithmetic on the
// dequantized weights (engine/model/quant.h) and the activations.
#include "kernels/cpu/quant_ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
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

void Check(GgmlType type, int64_t rows, int32_t tokens, int64_t cols);

TEST_P(QuantOpsTest, SimdLevelsMatchTheReferenceAndTheReferenceMatchesFp32) {
  const GgmlType type = GetParam();
  // 25 blocks of 32 (an odd count, for the two-block 512-bit steps) or 32,
  // three blocks of 256; 7 tokens (one partial tile) or 37 (chunks of 16
  // and partial tiles), 9 rows or 14 (partial row tiles either way).
  for (const auto& [rows, tokens, legacy_cols] :
       {std::tuple<int64_t, int32_t, int64_t>{9, 7, 800}, {14, 37, 1024}}) {
    Check(type, rows, tokens, FindGgmlType(static_cast<uint32_t>(type))->block == 256 ? 768 : legacy_cols);
  }
}

void Check(GgmlType type, int64_t rows, int32_t tokens, int64_t cols) {
  SCOPED_TRACE(std::to_string(rows) + " rows, " + std::to_string(tokens) + " tokens, " + std::to_string(cols) +
               " columns");
  std::mt19937 rng(1234 + static_cast<int>(type) + static_cast<int>(cols));
  const Weight w = RandomWeight(type, rows, cols, rng);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(tokens * cols);
  for (float& v : x) v = normal(rng);
  const int64_t x_bytes = ActivationRowBytes(type, cols);
  std::vector<uint8_t> xq(tokens * x_bytes);
  for (int32_t t = 0; t < tokens; ++t) QuantizeActivations(type, &x[t * cols], cols, &xq[t * x_bytes]);

  std::vector<float> reference(tokens * rows);
  QuantMatMulReference(reference.data(), rows, xq.data(), tokens, w, 0, rows);

  // fp32 arithmetic on the dequantized weights and activations: the
  // activation rounding (int8 per block) is all that separates them.
  const std::vector<float> wf = w.ToF32();
  // The SIMD levels sum the same integer block dots in another order: their
  // float error scales with the size of the terms, not of the result.
  std::vector<double> tolerance(tokens * rows);
  for (int32_t t = 0; t < tokens; ++t) {
    for (int64_t r = 0; r < rows; ++r) {
      double exact = 0, magnitude = 0;
      for (int64_t i = 0; i < cols; ++i) {
        exact += double{wf[r * cols + i]} * x[t * cols + i];
        magnitude += std::fabs(double{wf[r * cols + i]} * x[t * cols + i]);
      }
      EXPECT_NEAR(reference[t * rows + r], exact, 0.02 * magnitude) << "token " << t << " row " << r;
      tolerance[t * rows + r] = 4e-6 * magnitude + 1e-7;
    }
  }
  int levels_run = 0;
  for (int level : {1, 2}) {
    std::vector<float> out(tokens * rows, NAN);
    // Rows split in two ranges, as threads split them.
    if (!QuantMatMulAtLevel(level, out.data(), rows, xq.data(), tokens, w, 0, 4)) continue;
    ASSERT_TRUE(QuantMatMulAtLevel(level, out.data(), rows, xq.data(), tokens, w, 4, rows));
    ++levels_run;
    for (size_t i = 0; i < out.size(); ++i) {
      EXPECT_NEAR(out[i], reference[i], tolerance[i]) << "level " << level << " at " << i;
    }
    // One token at a time: the batch-1 decode path (512-bit at level 2).
    std::vector<float> single(tokens * rows, NAN);
    for (int32_t t = 0; t < tokens; ++t) {
      ASSERT_TRUE(QuantMatMulAtLevel(level, &single[t * rows], rows, &xq[t * x_bytes], 1, w, 0, rows));
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

TEST(QuantOpsTest, SimdActivationQuantizersWriteTheReferenceBytes) {
  std::mt19937 rng(99);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  constexpr int64_t kCols = 1024;
  for (GgmlType type : {GgmlType::kQ8_0, GgmlType::kQ4_1, GgmlType::kQ4_K}) {
    for (int trial = 0; trial < 50; ++trial) {
      std::vector<float> x(kCols);
      for (float& v : x) v = normal(rng) * (trial % 5 == 0 ? 1e-3f : 3.0f);
      if (trial % 7 == 0) std::fill(x.begin(), x.begin() + 256, 0.0f);  // all-zero blocks
      if (trial % 3 == 0) {
        // Values that land on .5 exactly: the rounding of ties must agree.
        x[5] = 127.0f;
        for (int j = 6; j < 32; ++j) x[j] = (j % 2 ? 0.5f : -2.5f) + static_cast<float>(j - 16);
      }
      if (trial == 49) x[300] = NAN;  // a bad model's NaN: any bytes, but no crash or overrun
      const int64_t bytes = ActivationRowBytes(type, kCols);
      std::vector<uint8_t> fast(bytes), reference(bytes);
      QuantizeActivations(type, x.data(), kCols, fast.data());
      QuantizeActivationsReference(type, x.data(), kCols, reference.data());
      if (trial == 49) continue;
      ASSERT_EQ(fast, reference) << GgmlTypeName(static_cast<uint32_t>(type)) << " trial " << trial;
    }
  }
}

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

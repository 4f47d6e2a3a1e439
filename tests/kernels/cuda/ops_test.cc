// Each elementwise op and the GEMM wrapper against kernels/cpu/ops.h on fresh
// random inputs, outputs poisoned with NaN first, per-op tolerances.
#include <gtest/gtest.h>

#include "engine/sampler.h"
#include "kernels/cpu/ops.h"
#include "kernels/cuda/argmax.cuh"
#include "kernels/cuda/embedding.cuh"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/rms_norm.cuh"
#include "kernels/cuda/swiglu.cuh"
#include "tests/kernels/cuda/cuda_test_util.h"

namespace sinkserve::cuda {
namespace {

using namespace ::sinkserve::cuda::testing;

// One rounding of the storage dtype, relative: fp16 2^-11, bf16 2^-8.
double Ulp(DType d) { return d == DType::kF16 ? 1.0 / 2048 : 1.0 / 256; }

class OpsTest : public ::testing::TestWithParam<DType> {};

TEST_P(OpsTest, EmbeddingGathersRowsExactly) {
  REQUIRE_CUDA_DEVICE();
  const DType d = GetParam();
  const int32_t vocab = 37, dim = 300, tokens = 9;
  const std::vector<float> table = Round(d, RandomVector(int64_t{vocab} * dim, 1));
  const std::vector<int32_t> ids = {0, 36, 5, 5, 17, 1, 36, 2, 0};
  DevicePtr d_table = UploadAs(d, table), d_ids = Upload(ids), out = Poisoned(int64_t{tokens} * dim * 4);
  LaunchEmbedding({.dtype = d, .table = d_table.get(), .ids = As<int32_t>(d_ids), .out = As<float>(out),
                   .tokens = tokens, .dim = dim},
                  nullptr);
  const std::vector<float> got = Download<float>(out, int64_t{tokens} * dim);
  for (int32_t t = 0; t < tokens; ++t) {
    for (int32_t i = 0; i < dim; ++i) ASSERT_EQ(got[t * dim + i], table[ids[t] * dim + i]) << t << "," << i;
  }
}

TEST_P(OpsTest, RmsNormMatchesCpuOnGatheredRows) {
  REQUIRE_CUDA_DEVICE();
  const DType d = GetParam();
  for (int32_t dim : {8, 64, 333, 4096}) {
    const int32_t src_rows = 7;
    const std::vector<float> x = RandomVector(int64_t{src_rows} * dim, dim, 3.0f);
    const std::vector<float> w = RandomVector(dim, dim + 1);
    const std::vector<int32_t> rows = {6, 0, 3, 3};
    DevicePtr d_x = Upload(x), d_w = Upload(w), d_rows = Upload(rows);
    DevicePtr out = Poisoned(int64_t{4} * dim * 2);
    LaunchRmsNorm({.dtype = d, .x = As<float>(d_x), .weight = As<float>(d_w), .rows = As<int32_t>(d_rows),
                   .out = out.get(), .n_rows = 4, .dim = dim, .eps = 1e-5f},
                  nullptr);
    const std::vector<float> got = DownloadAs(d, out, int64_t{4} * dim);
    std::vector<float> want(got.size());
    for (int r = 0; r < 4; ++r) cpu::RmsNorm(&want[r * dim], &x[rows[r] * dim], w.data(), dim, 1e-5f);
    EXPECT_LE(WorstScaledError(got, want, 1e-6, 1.5 * Ulp(d)), 1.0) << "dim " << dim;
  }
}

TEST_P(OpsTest, LayerNormMatchesCpuWithAndWithoutBias) {
  REQUIRE_CUDA_DEVICE();
  const DType d = GetParam();
  for (int32_t dim : {8, 64, 333, 4096}) {
    for (bool biased : {false, true}) {
      const int32_t src_rows = 5;
      // An offset mean, so a norm that skipped centring would be far off.
      std::vector<float> x = RandomVector(int64_t{src_rows} * dim, dim + 7, 3.0f);
      for (float& v : x) v += 2.0f;
      const std::vector<float> w = RandomVector(dim, dim + 8), b = RandomVector(dim, dim + 9);
      const std::vector<int32_t> rows = {4, 1, 1};
      DevicePtr d_x = Upload(x), d_w = Upload(w), d_b = Upload(b), d_rows = Upload(rows);
      DevicePtr out = Poisoned(int64_t{3} * dim * 2);
      LaunchRmsNorm({.dtype = d, .x = As<float>(d_x), .weight = As<float>(d_w), .rows = As<int32_t>(d_rows),
                     .out = out.get(), .n_rows = 3, .dim = dim, .eps = 1e-5f, .layer_norm = true,
                     .bias = biased ? As<float>(d_b) : nullptr},
                    nullptr);
      const std::vector<float> got = DownloadAs(d, out, int64_t{3} * dim);
      std::vector<float> want(got.size());
      for (int r = 0; r < 3; ++r) {
        cpu::LayerNorm(&want[r * dim], &x[rows[r] * dim], w.data(), biased ? b.data() : nullptr, dim, 1e-5f);
      }
      EXPECT_LE(WorstScaledError(got, want, 1e-5, 1.5 * Ulp(d)), 1.0) << "dim " << dim << " bias " << biased;
    }
  }
}

TEST_P(OpsTest, GeluMatchesCpu) {
  REQUIRE_CUDA_DEVICE();
  const DType d = GetParam();
  const int32_t tokens = 5, hidden = 1000;
  std::vector<float> up = RandomVector(int64_t{tokens} * hidden, 14, 3.0f);
  up[0] = -30.0f;  // tanh saturates
  up[1] = 30.0f;
  DevicePtr d_in = Upload(up), out = Poisoned(int64_t{tokens} * hidden * 2);
  LaunchGelu({.dtype = d, .up = As<float>(d_in), .out = out.get(), .tokens = tokens, .hidden = hidden}, nullptr);
  std::vector<float> want = up;
  cpu::Gelu(want.data(), static_cast<int64_t>(want.size()));
  EXPECT_LE(WorstScaledError(DownloadAs(d, out, want.size()), want, 1e-6, 1.5 * Ulp(d)), 1.0);
}

TEST_P(OpsTest, SwiGluMatchesCpu) {
  REQUIRE_CUDA_DEVICE();
  const DType d = GetParam();
  const int32_t tokens = 5, hidden = 1000;
  const std::vector<float> gate_up = RandomVector(int64_t{tokens} * 2 * hidden, 4, 2.0f);
  DevicePtr d_in = Upload(gate_up), out = Poisoned(int64_t{tokens} * hidden * 2);
  LaunchSwiGlu({.dtype = d, .gate_up = As<float>(d_in), .out = out.get(), .tokens = tokens, .hidden = hidden}, nullptr);
  std::vector<float> gate(int64_t{tokens} * hidden), up(gate.size());
  for (int32_t t = 0; t < tokens; ++t) {
    for (int32_t i = 0; i < hidden; ++i) {
      gate[t * hidden + i] = gate_up[t * 2 * hidden + i];
      up[t * hidden + i] = gate_up[t * 2 * hidden + hidden + i];
    }
  }
  cpu::SwiGlu(gate.data(), up.data(), static_cast<int64_t>(gate.size()));
  EXPECT_LE(WorstScaledError(DownloadAs(d, out, gate.size()), gate, 1e-6, 1.5 * Ulp(d)), 1.0);
}

TEST_P(OpsTest, GemmMatchesCpuAndAccumulatesWithBetaOne) {
  REQUIRE_CUDA_DEVICE();
  const DType d = GetParam();
  cublasHandle_t handle;
  CUBLAS_CHECK(cublasCreate(&handle));
  for (auto [tokens, n, k] : {std::tuple{1, 64, 8}, {7, 1000, 300}, {33, 512, 4096}}) {
    const std::vector<float> w = Round(d, RandomVector(int64_t{n} * k, n, 0.05f));
    const std::vector<float> in = Round(d, RandomVector(int64_t{tokens} * k, k));
    const std::vector<float> base = RandomVector(int64_t{tokens} * n, tokens);
    DevicePtr d_w = UploadAs(d, w), d_in = UploadAs(d, in), out = Poisoned(int64_t{tokens} * n * 4);
    Gemm(handle, {.dtype = d, .w = d_w.get(), .in = d_in.get(), .out = As<float>(out), .tokens = tokens, .n = n, .k = k});
    std::vector<float> want(int64_t{tokens} * n);
    cpu::MatMulRows(want.data(), in.data(), w.data(), tokens, n, k, 0, n);
    std::vector<float> got = Download<float>(out, want.size());
    // Inputs are exact in both; only fp32 summation order differs.
    EXPECT_LE(WorstScaledError(got, want, 1e-3, 1e-3), 1.0) << tokens << "x" << n << "x" << k;

    DevicePtr acc = Upload(base);
    Gemm(handle, {.dtype = d, .w = d_w.get(), .in = d_in.get(), .out = As<float>(acc), .tokens = tokens, .n = n,
                  .k = k, .beta = 1.0f});
    got = Download<float>(acc, want.size());
    for (size_t i = 0; i < want.size(); ++i) want[i] += base[i];
    EXPECT_LE(WorstScaledError(got, want, 1e-3, 1e-3), 1.0) << "beta=1";
  }
  CUBLAS_CHECK(cublasDestroy(handle));
}

INSTANTIATE_TEST_SUITE_P(Dtypes, OpsTest, ::testing::Values(DType::kF16, DType::kBF16),
                         [](const auto& info) { return std::string(DTypeName(info.param)); });

TEST(ArgmaxTest, MatchesHostArgmaxIncludingTiesAndOddVocab) {
  REQUIRE_CUDA_DEVICE();
  const int32_t rows = 6, vocab = 32003;
  std::vector<float> logits = RandomVector(int64_t{rows} * vocab, 9);
  logits[1 * vocab + 100] = 50.0f;  // tie: the first index wins
  logits[1 * vocab + 30000] = 50.0f;
  logits[2 * vocab + vocab - 1] = 60.0f;  // last element
  for (int32_t i = 0; i < vocab; ++i) logits[3 * vocab + i] = -1.0f;  // all equal -> 0
  DevicePtr d_logits = Upload(logits), ids = Poisoned(rows * 4);
  LaunchArgmax({.logits = As<float>(d_logits), .ids = As<int32_t>(ids), .rows = rows, .vocab = vocab}, nullptr);
  const std::vector<int32_t> got = Download<int32_t>(ids, rows);
  for (int32_t r = 0; r < rows; ++r) {
    EXPECT_EQ(got[r], Argmax(absl::MakeConstSpan(&logits[int64_t{r} * vocab], vocab))) << "row " << r;
  }
  EXPECT_EQ(got[1], 100);
  EXPECT_EQ(got[3], 0);
}

}  // namespace
}  // namespace sinkserve::cuda

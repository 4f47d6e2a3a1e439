// Helpers for the CUDA tests: skip without a device, host<->device copies,
// host rounding to the storage dtypes, and error norms.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_memory.h"

// Skips the test (with a message) when no CUDA device is visible.
#define REQUIRE_CUDA_DEVICE()                                                          \
  do {                                                                                 \
    if (!::sinkserve::CudaDevicePresent()) GTEST_SKIP() << "no CUDA device visible";   \
  } while (0)

namespace sinkserve::cuda::testing {

// One 16-bit storage element as raw bits, converted on the host.
inline uint16_t ToBits(DType d, float x) {
  if (d == DType::kF16) return __half_raw(__float2half_rn(x)).x;
  return __nv_bfloat16_raw(__float2bfloat16_rn(x)).x;
}
inline float FromBits(DType d, uint16_t bits) {
  if (d == DType::kF16) {
    __half_raw raw;
    raw.x = bits;
    return __half2float(__half(raw));
  }
  __nv_bfloat16_raw raw;
  raw.x = bits;
  return __bfloat162float(__nv_bfloat16(raw));
}
inline float Round(DType d, float x) { return FromBits(d, ToBits(d, x)); }
inline std::vector<float> Round(DType d, std::vector<float> v) {
  for (float& x : v) x = Round(d, x);
  return v;
}

inline std::vector<float> RandomVector(int64_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

// Device buffer of `bytes` filled with 0xFF bytes: NaN as fp32, fp16 and bf16,
// so an element a kernel forgot to write fails every comparison.
inline DevicePtr Poisoned(int64_t bytes) {
  DevicePtr p = TryDeviceAlloc(bytes);
  EXPECT_TRUE(p != nullptr);
  CUDA_CHECK(cudaMemset(p.get(), 0xFF, bytes));
  return p;
}

template <typename T>
DevicePtr Upload(const std::vector<T>& v) {
  DevicePtr p = TryDeviceAlloc(static_cast<int64_t>(v.size() * sizeof(T)));
  CUDA_CHECK(cudaMemcpy(p.get(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return p;
}

inline DevicePtr UploadAs(DType d, const std::vector<float>& v) {
  std::vector<uint16_t> bits(v.size());
  for (size_t i = 0; i < v.size(); ++i) bits[i] = ToBits(d, v[i]);
  return Upload(bits);
}

template <typename T>
std::vector<T> Download(const DevicePtr& p, int64_t n) {
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<T> v(n);
  CUDA_CHECK(cudaMemcpy(v.data(), p.get(), n * sizeof(T), cudaMemcpyDeviceToHost));
  return v;
}

inline std::vector<float> DownloadAs(DType d, const DevicePtr& p, int64_t n) {
  std::vector<uint16_t> bits = Download<uint16_t>(p, n);
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = FromBits(d, bits[i]);
  return v;
}

// ||got - want||_2 / ||want||_2 over [begin, begin + n); NaN anywhere gives NaN.
inline double RelativeError(const float* got, const float* want, int64_t n) {
  double num = 0.0, den = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = double{got[i]} - double{want[i]};
    num += d * d;
    den += double{want[i]} * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

// Max |got - want| / (atol + rtol |want|): <= 1 passes; NaN fails.
inline double WorstScaledError(const std::vector<float>& got, const std::vector<float>& want, double atol, double rtol,
                               int64_t* where = nullptr) {
  double worst = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double e = std::abs(double{got[i]} - want[i]) / (atol + rtol * std::abs(double{want[i]}));
    if (!(e <= worst)) {  // also catches NaN
      worst = std::isnan(e) ? INFINITY : e;
      if (where) *where = static_cast<int64_t>(i);
    }
  }
  return worst;
}

}  // namespace sinkserve::cuda::testing

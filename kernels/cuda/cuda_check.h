// Error checks and the small shared vocabulary of the CUDA backend.
//
// CUDA and cuBLAS failures are programming or device errors, not user input:
// CUDA_CHECK / CUBLAS_CHECK report file:line and abort. Allocation is the one
// recoverable failure and is handled where it happens (DeviceBuffer, KvPool).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#define CUDA_CHECK(expr)                                                              \
  do {                                                                                \
    cudaError_t sinkserve_err_ = (expr);                                              \
    if (sinkserve_err_ != cudaSuccess) {                                              \
      std::fprintf(stderr, "%s:%d: CUDA error %s: %s (%s)\n", __FILE__, __LINE__,     \
                   cudaGetErrorName(sinkserve_err_), cudaGetErrorString(sinkserve_err_), #expr); \
      std::abort();                                                                   \
    }                                                                                 \
  } while (0)

#define CUBLAS_CHECK(expr)                                                            \
  do {                                                                                \
    cublasStatus_t sinkserve_st_ = (expr);                                            \
    if (sinkserve_st_ != CUBLAS_STATUS_SUCCESS) {                                     \
      std::fprintf(stderr, "%s:%d: cuBLAS error %s (%s)\n", __FILE__, __LINE__,       \
                   cublasGetStatusName(sinkserve_st_), #expr);                        \
      std::abort();                                                                   \
    }                                                                                 \
  } while (0)

// Launcher precondition: a violated one is a caller bug, reported like a CUDA error.
#define SINKSERVE_REQUIRE(cond)                                                       \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      std::fprintf(stderr, "%s:%d: precondition failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                   \
    }                                                                                 \
  } while (0)

// After every launch: catches bad launch configurations at the launch site.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

namespace sinkserve::cuda {

// Storage type of weights, activations fed to GEMMs, and the KV cache.
// Accumulation, the residual stream and GEMM outputs are always fp32.
enum class DType { kF16, kBF16 };

inline constexpr int64_t kDTypeBytes = 2;  // both storage types are 16-bit

inline cudaDataType_t CudaDataType(DType d) { return d == DType::kF16 ? CUDA_R_16F : CUDA_R_16BF; }
inline const char* DTypeName(DType d) { return d == DType::kF16 ? "fp16" : "bf16"; }

}  // namespace sinkserve::cuda

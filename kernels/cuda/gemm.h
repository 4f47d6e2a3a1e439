// cuBLAS GEMM for every projection: out (tokens, n) fp32 = in (tokens, k) .
// w^T + beta * out, with w (n, k) row-major in the storage dtype (the layout
// models use), in (tokens, k) in the storage dtype, fp32 accumulation on
// tensor cores. beta = 1 fuses the residual add into the GEMM epilogue.
#pragma once

#include <cublas_v2.h>

#include <cstdint>

#include "kernels/cuda/cuda_check.h"

namespace sinkserve::cuda {

struct GemmArgs {
  DType dtype;
  const void* w;   // (n, k) storage dtype, row-major
  const void* in;  // (tokens, k) storage dtype
  float* out;      // (tokens, n) fp32
  int32_t tokens = 0;
  int32_t n = 0;
  int32_t k = 0;
  float beta = 0.0f;  // 0: overwrite out; 1: accumulate into it
};

// Runs on the stream `handle` is bound to.
void Gemm(cublasHandle_t handle, const GemmArgs& args);

}  // namespace sinkserve::cuda

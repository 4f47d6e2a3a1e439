// RMSNorm (or LayerNorm, for MPT) of fp32 residual rows into the storage
// dtype that feeds the next GEMM.
// The residual add before it is fused into the preceding GEMM (beta = 1 in
// cuBLAS accumulates W.x into the fp32 stream), so this op only reads.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/cuda_check.h"

namespace sinkserve::cuda {

struct RmsNormArgs {
  DType dtype;
  const float* x;        // (>= max row read, dim) fp32
  const float* weight;   // (dim) fp32
  const int32_t* rows;   // (n_rows) device: row of x for each output row; null = identity
  void* out;             // (n_rows, dim) storage dtype
  int32_t n_rows = 0;
  int32_t dim = 0;
  float eps = 1e-5f;
  bool layer_norm = false;       // LayerNorm instead: cpu::LayerNorm's formula
  const float* bias = nullptr;   // (dim) fp32 LayerNorm shift; null = none
};

// out[r] = weight * (x[rows[r]] / rms(x[rows[r]])), the cpu::RmsNorm formula;
// with layer_norm, weight * (x - mean) / sqrt(var + eps) + bias.
void LaunchRmsNorm(const RmsNormArgs& args, cudaStream_t stream);

}  // namespace sinkserve::cuda

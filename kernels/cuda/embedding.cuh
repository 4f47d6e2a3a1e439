// Embedding gather: the residual stream's first value for every step token.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/cuda_check.h"

namespace sinkserve::cuda {

struct EmbeddingArgs {
  DType dtype;
  const void* table;     // (vocab, dim) storage dtype
  const int32_t* ids;    // (tokens) device, each in [0, vocab): validated upstream
  float* out;            // (tokens, dim) fp32 residual stream
  int32_t tokens = 0;
  int32_t dim = 0;
};

void LaunchEmbedding(const EmbeddingArgs& args, cudaStream_t stream);

}  // namespace sinkserve::cuda

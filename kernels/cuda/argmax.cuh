// Greedy sampling on the device: the index of each logits row's largest value
// (the first on ties, as sinkserve::Argmax and llama2.c). Only the ids come
// back to the host, not (rows, vocab) floats.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace sinkserve::cuda {

struct ArgmaxArgs {
  const float* logits;  // (rows, vocab) fp32
  int32_t* ids;         // (rows) device
  int32_t rows = 0;
  int32_t vocab = 0;
};

void LaunchArgmax(const ArgmaxArgs& args, cudaStream_t stream);

}  // namespace sinkserve::cuda

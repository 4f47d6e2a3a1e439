// The MLP's activation between its GEMMs: SwiGLU, h = silu(gate) * up, from
// the fused gate|up GEMM output; or GELU of the up projection alone (MPT).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/cuda_check.h"

namespace sinkserve::cuda {

struct SwiGluArgs {
  DType dtype;
  const float* gate_up;  // (tokens, 2 * hidden) fp32: gate in [0, hidden), up in [hidden, 2 hidden)
  void* out;             // (tokens, hidden) storage dtype, input of the down projection
  int32_t tokens = 0;
  int32_t hidden = 0;
};

void LaunchSwiGlu(const SwiGluArgs& args, cudaStream_t stream);

struct GeluArgs {
  DType dtype;
  const float* up;  // (tokens, hidden) fp32
  void* out;        // (tokens, hidden) storage dtype
  int32_t tokens = 0;
  int32_t hidden = 0;
};

// out = gelu(up), cpu::Gelu's tanh form.
void LaunchGelu(const GeluArgs& args, cudaStream_t stream);

}  // namespace sinkserve::cuda

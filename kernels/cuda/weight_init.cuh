// Device-side weight preparation: fp32 -> storage dtype conversion for
// uploads, and deterministic random fills for synthetic models whose weights
// never exist on the host (a 7B fp32 host copy would not fit the host).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/cuda_check.h"

namespace sinkserve::cuda {

// out[i] = round(in[i]) for i < n. in: (n) fp32 device; out: (n) storage dtype.
void LaunchConvertF32(DType dtype, const float* in, void* out, int64_t n, cudaStream_t stream);

// out[i] = offset + uniform(-1, 1) * amplitude * sqrt(3): zero-mean noise of
// standard deviation `amplitude` around `offset`, from a counter hash of
// (seed, i), so a fill is reproducible and independent of the launch shape.
// out: (n) storage dtype.
void LaunchRandomFill(DType dtype, void* out, int64_t n, uint64_t seed, float offset, float amplitude,
                      cudaStream_t stream);
// The same for an fp32 buffer (norm weights).
void LaunchRandomFillF32(float* out, int64_t n, uint64_t seed, float offset, float amplitude, cudaStream_t stream);

}  // namespace sinkserve::cuda

// Measurements the CUDA benchmark needs from the device, kept here so the
// benchmark itself carries no CUDA headers.
#pragma once

#include <cstdint>

namespace sinkserve::cuda {

struct CopyBandwidth {
  int64_t bytes = 0;        // size of one copy
  double median_ms = 0;     // of `reps` timed copies, CUDA events
  double read_write_gbps = 0;  // 2 * bytes / median: bytes read plus bytes written per second, GB/s
};

// Times cudaMemcpy device-to-device of `bytes` (after two warm-up copies).
// Zero bytes when the buffers do not fit.
CopyBandwidth MeasureCopyBandwidth(int64_t bytes, int32_t reps);

}  // namespace sinkserve::cuda

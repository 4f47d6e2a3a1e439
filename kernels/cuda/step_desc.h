// Per-step metadata the kernels read from device memory: one SeqDesc per batch
// entry plus a token -> entry map. Plain data, shared by host and device code.
#pragma once

#include <cstdint>

#include "engine/cache_geometry.h"

namespace sinkserve::cuda {

// One batch entry as the kernels see it. Its session's KV slot inside the pool
// (starting `cache_offset` elements from the pool base) is laid out
//   (n_layers, 2 [K then V], n_kv_heads, geometry.Slots(), head_dim)
// so one head's keys are contiguous: decode attention streams them.
struct SeqDesc {
  int64_t cache_offset = 0;  // elements from the pool base
  int64_t n_past = 0;        // tokens the session consumed before this step
  CacheGeometry geometry;
  int32_t token_begin = 0;   // its first token in the step's flat token array
  int32_t n_tokens = 0;
};

// Elements of one layer (K and V) of a session's slot.
SINKSERVE_HD int64_t LayerElements(const CacheGeometry& g, int32_t n_kv_heads, int32_t head_dim) {
  return 2 * int64_t{n_kv_heads} * g.Slots() * head_dim;
}

}  // namespace sinkserve::cuda

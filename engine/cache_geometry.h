// StreamingLLM cache geometry: pure index math, usable from host and device.
// Which policy makes which geometry is engine/cache_policy.h.
//
// A session's cache holds `sinks` attention-sink slots that are never evicted,
// then a ring of `ring` slots for the rolling window. Token t (its absolute
// index in the session, counted from 0 and growing without bound) lives in
//   slot(t) = t                           if t < sinks
//           = sinks + (t - sinks) % ring  otherwise.
// Query token t attends to exactly:
//   - the sinks 0 .. min(sinks, t+1)-1, and
//   - the `window` most recent tokens, itself included: WindowBegin(t) .. t,
//     never reaching below the sinks.
// So every token, in a prompt chunk or generated, sees at most sinks + window
// keys: eviction is per token, not per turn.
//
// ring = window + max_chunk - 1, so appending a whole chunk before attending
// never overwrites a key that an earlier token of the same chunk still needs.
//
// Positions are counted inside the cache, not in the text: sinks take 0..S-1,
// window keys follow in age order, and the query takes the next position. All
// positions stay below sinks + window, so RoPE angles never grow with t and
// stay exact after millions of tokens. The CUDA backend caches keys
// un-rotated and rotates them by their cache position at attention time; the
// CPU backend uses the exact equivalent of rotating keys once by slot and the
// query per lap of the ring (kernels/cpu/fast_ops.h), since RoPE scores
// depend only on position differences.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define SINKSERVE_HD __host__ __device__ __forceinline__
#else
#define SINKSERVE_HD inline
#endif

namespace sinkserve {

struct CacheGeometry {
  int32_t sinks = 0;   // S: never-evicted leading tokens
  int32_t window = 0;  // W: most recent tokens each query sees, itself included
  int32_t ring = 0;    // physical ring slots, >= window

  SINKSERVE_HD int32_t Slots() const { return sinks + ring; }

  // Physical slot of absolute token t.
  SINKSERVE_HD int32_t Slot(int64_t t) const {
    return t < sinks ? static_cast<int32_t>(t)
                     : sinks + static_cast<int32_t>((t - sinks) % ring);
  }
  // Number of sink keys query t sees.
  SINKSERVE_HD int32_t SinkCount(int64_t t) const {
    return t + 1 < sinks ? static_cast<int32_t>(t + 1) : sinks;
  }
  // First absolute index of the window query t sees (> t when t is a sink).
  SINKSERVE_HD int64_t WindowBegin(int64_t t) const {
    const int64_t lo = t - window + 1;
    return lo > sinks ? lo : sinks;
  }
  // Window keys query t sees.
  SINKSERVE_HD int32_t WindowCount(int64_t t) const {
    const int64_t n = t - WindowBegin(t) + 1;
    return n > 0 ? static_cast<int32_t>(n) : 0;
  }
  // Total keys query t sees: at most sinks + window.
  SINKSERVE_HD int32_t KeyCount(int64_t t) const { return SinkCount(t) + WindowCount(t); }
  // Cache position of key j (j <= t) as seen by query t.
  SINKSERVE_HD int32_t KeyPosition(int64_t j, int64_t t) const {
    return j < sinks ? static_cast<int32_t>(j)
                     : sinks + static_cast<int32_t>(j - WindowBegin(t));
  }
  // Cache position of query t: the next position after every key it sees.
  SINKSERVE_HD int32_t QueryPosition(int64_t t) const { return KeyPosition(t, t); }
  // Largest position any query can take: positions lie in [0, MaxPositions()).
  SINKSERVE_HD int32_t MaxPositions() const { return sinks + window; }

  // Of a session that has consumed `consumed` tokens: the keys its latest
  // query saw, min(consumed, sinks + window), and the tokens no query can see
  // any more.
  SINKSERVE_HD int64_t VisibleTokens(int64_t consumed) const {
    const int64_t visible = int64_t{sinks} + window;
    return consumed < visible ? consumed : visible;
  }
  SINKSERVE_HD int64_t EvictedTokens(int64_t consumed) const { return consumed - VisibleTokens(consumed); }
};

}  // namespace sinkserve

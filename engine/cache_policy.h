// The cache policy, in one place: what a session's KV cache keeps (the
// policies and their defaults), how a policy is named and parsed, the
// geometry it makes, when a cache is full, and how a client's request is
// resolved against the server's defaults and limits. The index math itself is
// engine/cache_geometry.h.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/cache_geometry.h"

namespace sinkserve {

enum class CachePolicy {
  kSinkWindow,  // S sinks + window W (StreamingLLM, the default)
  kWindow,      // window only: S = 0
  kDense,       // S = 0, W = the model's context: grows until it ends, then errors
  kRecompute,   // sliding window with re-computation: an offline baseline, not served
};

// The paper's default: 4 sinks, and a window that makes a 256-token cache.
inline constexpr int32_t kDefaultSinks = 4;
inline constexpr int32_t kDefaultWindow = 252;
// Caps on sinks, window and chunk that keep every slot index and position
// comfortably inside int32.
inline constexpr int32_t kMaxCacheTokens = 1 << 24;

struct CacheConfig {
  CachePolicy policy = CachePolicy::kSinkWindow;
  int32_t sinks = kDefaultSinks;    // 0 unless kSinkWindow
  int32_t window = kDefaultWindow;  // kDense: the model's context once resolved
};

// "sink_window", "window", "dense", "recompute".
const char* CachePolicyName(CachePolicy policy);
// The inverse of CachePolicyName; INVALID_ARGUMENT naming the choices.
absl::StatusOr<CachePolicy> ParseCachePolicy(std::string_view name);

// Geometry for a policy: the sinks/window/ring a session's cache needs.
// `max_chunk` is the most new tokens one step may bring (prefill chunk size);
// `context` is the model's trained context (the dense capacity).
absl::StatusOr<CacheGeometry> GeometryFor(const CacheConfig& config, int32_t max_chunk, int32_t context);

// OK when a cache under `config` that has consumed `consumed` tokens can take
// `n` more: only a dense cache can be full (RESOURCE_EXHAUSTED past `context`).
absl::Status CheckCacheCapacity(const CacheConfig& config, int64_t consumed, int64_t n, int32_t context);

// OK for the policies a server may serve (all but kRecompute).
absl::Status CheckServable(CachePolicy policy);

// What a client asks for; unset or 0 fields take the server's default.
struct CacheRequest {
  std::optional<CachePolicy> policy;
  int32_t sinks = 0;   // only for kSinkWindow
  int32_t window = 0;  // not for kDense, whose window is the context
};

// A request resolved against the server's default cache, its cap on window
// and sink tokens (each), and the model's context: INVALID_ARGUMENT, with
// what to change, for a request that cannot be served.
absl::StatusOr<CacheConfig> ResolveCacheConfig(const CacheRequest& request, const CacheConfig& defaults,
                                               int32_t max_window, int32_t context);

}  // namespace sinkserve

#include "engine/cache_policy.h"

#include "absl/strings/str_format.h"

namespace sinkserve {

const char* CachePolicyName(CachePolicy policy) {
  switch (policy) {
    case CachePolicy::kSinkWindow: return "sink_window";
    case CachePolicy::kWindow: return "window";
    case CachePolicy::kDense: return "dense";
    case CachePolicy::kRecompute: return "recompute";
  }
  return "unknown";
}

absl::StatusOr<CachePolicy> ParseCachePolicy(std::string_view name) {
  for (CachePolicy policy :
       {CachePolicy::kSinkWindow, CachePolicy::kWindow, CachePolicy::kDense, CachePolicy::kRecompute}) {
    if (name == CachePolicyName(policy)) return policy;
  }
  return absl::InvalidArgumentError(
      absl::StrFormat("the cache policy must be sink_window, window, dense or recompute, got '%s'", name));
}

absl::StatusOr<CacheGeometry> GeometryFor(const CacheConfig& config, int32_t max_chunk, int32_t context) {
  if (max_chunk < 1 || max_chunk > kMaxCacheTokens) {
    return absl::InvalidArgumentError(
        absl::StrFormat("chunk size must be in [1, %d], got %d", kMaxCacheTokens, max_chunk));
  }
  CacheGeometry g;
  switch (config.policy) {
    case CachePolicy::kSinkWindow:
      g.sinks = config.sinks;
      g.window = config.window;
      break;
    case CachePolicy::kWindow:
    case CachePolicy::kRecompute:
      g.sinks = 0;
      g.window = config.window;
      break;
    case CachePolicy::kDense:
      if (context < 1) return absl::InvalidArgumentError("dense cache needs the model's context length, which is unknown");
      g.sinks = 0;
      g.window = context;
      break;
  }
  if (g.sinks < 0 || g.sinks > kMaxCacheTokens) {
    return absl::InvalidArgumentError(absl::StrFormat("sinks must be in [0, %d], got %d", kMaxCacheTokens, g.sinks));
  }
  if (g.window < 1 || g.window > kMaxCacheTokens) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "window must be in [1, %d] for policy %s, got %d (every token must at least see itself)",
        kMaxCacheTokens, CachePolicyName(config.policy), g.window));
  }
  g.ring = g.window + max_chunk - 1;
  return g;
}

absl::Status CheckCacheCapacity(const CacheConfig& config, int64_t consumed, int64_t n, int32_t context) {
  if (config.policy == CachePolicy::kDense && consumed + n > context) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "dense cache is full: %d tokens consumed + %d new exceed the model's context of %d tokens "
        "(use the sink_window policy for endless sessions)",
        consumed, n, context));
  }
  return absl::OkStatus();
}

absl::Status CheckServable(CachePolicy policy) {
  if (policy == CachePolicy::kRecompute) {
    return absl::InvalidArgumentError(
        "the recompute policy is an offline benchmark baseline, not served; use sink_window, window or dense");
  }
  return absl::OkStatus();
}

absl::StatusOr<CacheConfig> ResolveCacheConfig(const CacheRequest& request, const CacheConfig& defaults,
                                               int32_t max_window, int32_t context) {
  CacheConfig cache;
  cache.policy = request.policy.value_or(defaults.policy);
  if (absl::Status servable = CheckServable(cache.policy); !servable.ok()) return servable;
  if (cache.policy != CachePolicy::kSinkWindow && request.sinks > 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "sink_tokens=%d only applies to the sink_window policy; leave it 0", request.sinks));
  }
  // A server whose default policy has no sinks (or no window) still serves
  // sink_window (or window) sessions with the paper's defaults.
  const int32_t default_sinks = defaults.policy == CachePolicy::kSinkWindow ? defaults.sinks : kDefaultSinks;
  cache.sinks = cache.policy == CachePolicy::kSinkWindow ? (request.sinks > 0 ? request.sinks : default_sinks) : 0;
  // Sinks hold K/V like the window does: the same cap bounds them.
  if (cache.sinks > max_window) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "sink_tokens=%d exceeds this server's limit of %d; ask for fewer sinks", cache.sinks, max_window));
  }
  if (cache.policy == CachePolicy::kDense) {
    if (request.window > 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "window_tokens=%d does not apply to the dense policy (its window is the model's context of %d); leave it 0",
          request.window, context));
    }
    cache.window = context;
    return cache;
  }
  const int32_t default_window = defaults.policy == CachePolicy::kDense ? kDefaultWindow : defaults.window;
  cache.window = request.window > 0 ? request.window : default_window;
  if (cache.window > max_window) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "window_tokens=%d exceeds this server's limit of %d; ask for a smaller window", cache.window, max_window));
  }
  return cache;
}

}  // namespace sinkserve

#include "engine/backend.h"

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

absl::StatusOr<CacheGeometry> GeometryFor(const CacheConfig& config, int32_t max_chunk,
                                          int32_t context) {
  // Caps keep every slot index and position comfortably inside int32.
  constexpr int32_t kMaxTokens = 1 << 24;
  if (max_chunk < 1 || max_chunk > kMaxTokens) {
    return absl::InvalidArgumentError(absl::StrFormat("chunk size must be in [1, %d], got %d", kMaxTokens, max_chunk));
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
  if (g.sinks < 0 || g.sinks > kMaxTokens) {
    return absl::InvalidArgumentError(absl::StrFormat("sinks must be in [0, %d], got %d", kMaxTokens, g.sinks));
  }
  if (g.window < 1 || g.window > kMaxTokens) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "window must be in [1, %d] for policy %s, got %d (every token must at least see itself)",
        kMaxTokens, CachePolicyName(config.policy), g.window));
  }
  g.ring = g.window + max_chunk - 1;
  return g;
}

}  // namespace sinkserve

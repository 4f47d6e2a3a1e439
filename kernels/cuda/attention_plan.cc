#include "kernels/cuda/attention_plan.h"

#include <algorithm>

namespace sinkserve::cuda {

AttentionPlan PlanAttention(absl::Span<const SeqDesc> seqs, int32_t prefill_min_tokens, int32_t queries_per_tile) {
  AttentionPlan plan;
  for (int32_t e = 0; e < static_cast<int32_t>(seqs.size()); ++e) {
    const SeqDesc& s = seqs[e];
    if (s.n_tokens >= prefill_min_tokens) {
      for (int32_t i = 0; i < s.n_tokens; i += queries_per_tile) {
        plan.tiles.push_back({.seq = e, .first = s.token_begin + i, .count = std::min(queries_per_tile, s.n_tokens - i)});
      }
    } else {
      for (int32_t i = 0; i < s.n_tokens; ++i) plan.decode_tokens.push_back(s.token_begin + i);
    }
  }
  return plan;
}

}  // namespace sinkserve::cuda

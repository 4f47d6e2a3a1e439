// Host side of a step's attention: which tokens the decode kernel takes
// (attention.cuh) and which tiles the prefill kernel takes
// (prefill_attention.cuh). An entry with at least `prefill_min_tokens` new
// tokens is a prefill chunk; its tokens are cut into tiles that share their
// key loads. The rest (decode tokens, small chunks) go one query per block,
// split along the cache when the step is too small to fill the GPU.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "kernels/cuda/prefill_attention.cuh"
#include "kernels/cuda/step_desc.h"

namespace sinkserve::cuda {

struct AttentionPlan {
  std::vector<int32_t> decode_tokens;  // flat token indices, ascending
  std::vector<PrefillTile> tiles;

  // Every token goes to the decode kernel in order: it needs no token list,
  // and the step's launches depend only on its shape (graph-capturable).
  bool AllDecode(int32_t tokens) const {
    return tiles.empty() && static_cast<int32_t>(decode_tokens.size()) == tokens;
  }
};

// `seqs` in batch order with their token_begin/n_tokens filled in.
// prefill_min_tokens >= 1; queries_per_tile >= 1.
AttentionPlan PlanAttention(absl::Span<const SeqDesc> seqs, int32_t prefill_min_tokens, int32_t queries_per_tile);

}  // namespace sinkserve::cuda

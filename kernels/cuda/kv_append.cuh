// Appends every step token's K and V (un-rotated) into its session's ring at
// CacheGeometry::Slot(t), converting fp32 projections to the storage dtype.
// Runs before attention in each layer: ring = window + max_chunk - 1, so no
// key a token of the same chunk still needs is overwritten.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/step_desc.h"

namespace sinkserve::cuda {

struct KvAppendArgs {
  DType dtype;
  const float* qkv;          // (tokens, qkv_stride) fp32: q | k | v, k at column k_offset
  int32_t qkv_stride = 0;
  int32_t k_offset = 0;      // = n_heads * head_dim; v follows at k_offset + kv_dim
  void* pool;                // KV pool base (storage dtype)
  const SeqDesc* seqs;       // (n_seqs) device
  const int32_t* token_seq;  // (tokens) device: batch entry of each token
  int32_t tokens = 0;
  int32_t n_kv_heads = 0;
  int32_t head_dim = 0;
  int32_t layer = 0;
};

void LaunchKvAppend(const KvAppendArgs& args, cudaStream_t stream);

}  // namespace sinkserve::cuda

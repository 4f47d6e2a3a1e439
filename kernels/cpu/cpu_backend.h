// The CPU reference backend: fp32 everywhere, the readable oracle that the
// CUDA backend is tested against. It runs a whole Batch per Forward call and
// spreads matmuls and attention heads over a small thread pool.
#pragma once

#include <memory>
#include <vector>

#include "engine/backend.h"
#include "kernels/cpu/fast_ops.h"
#include "kernels/cpu/thread_pool.h"

namespace sinkserve {

class CpuBackend final : public Backend {
 public:
  // threads = 0 uses every core.
  static absl::StatusOr<std::unique_ptr<CpuBackend>> Create(Model model, int32_t threads);

  std::string_view name() const override { return "cpu"; }
  const ModelConfig& config() const override { return model_.config; }
  absl::StatusOr<CacheId> CreateCache(const CacheGeometry& geometry) override;
  void DestroyCache(CacheId id) override;
  absl::Status ResetCache(CacheId id) override;
  absl::Status Forward(const Batch& batch, std::vector<float>* logits) override;

  // Bytes a cache with this geometry holds (K and V, every layer).
  int64_t CacheBytes(const CacheGeometry& geometry) const;

 private:
  struct Cache {
    CacheGeometry geometry;
    int64_t consumed = 0;   // tokens appended so far (absolute index of the next)
    // Slot-minor so attention vectorizes over slots (see cpu::RotatedAttention).
    std::vector<float> k;   // (n_layers, n_kv_heads, head_dim, slots), keys rotated by their slot index
    std::vector<float> v;   // (n_layers, n_kv_heads, head_dim, slots)
  };

  CpuBackend(Model model, int32_t threads);
  absl::Status ValidateBatch(const Batch& batch) const;
  void EnsureScratch(int32_t tokens, int32_t logit_rows);
  void RunLayer(const Batch& batch, int32_t layer);
  // out (tokens, n) = in (tokens, k) . wt, wt: (k, n).
  void MatMul(float* out, const float* in, const std::vector<float>& wt, int32_t tokens, int32_t n, int32_t k);

  // A layer's matrices, stacked and stored as cpu::TransposePadded.
  struct CpuLayer {
    std::vector<float> wqkv;  // [wq; wk; wv]: (dim, pad(q_dim + 2 * kv_dim))
    std::vector<float> wo;    // (q_dim, pad(dim))
    std::vector<float> w13;   // [w1; w3] (gate; up): (dim, pad(2 * hidden_dim))
    std::vector<float> w2;    // (hidden_dim, pad(dim))
  };
  int32_t qkv_dim() const { return model_.config.q_dim() + 2 * model_.config.kv_dim(); }

  Model model_;                      // embedding and norms; layer matrices live in layers_
  std::vector<CpuLayer> layers_;
  std::vector<float> classifier_t_;  // (dim, pad(vocab_size))
  ThreadPool pool_;
  cpu::RopeTable rope_;
  std::vector<std::unique_ptr<Cache>> caches_;  // indexed by CacheId; null when free

  // Scratch, grown to the largest batch seen. T = tokens in the batch.
  std::vector<float> x_;       // (T, dim) residual stream
  std::vector<float> xb_;      // (T, dim) normed input
  std::vector<float> qkv_;     // (T, q_dim + 2 * kv_dim): q | k | v per token
  std::vector<float> att_;     // (T, q_dim)
  std::vector<float> h13_;     // (T, 2 * hidden_dim): gate | up per token
  std::vector<float> hb_;      // (T, hidden_dim) SwiGLU output
  std::vector<float> attn_scratch_;  // (threads, per-query scratch)
  std::vector<int32_t> token_seq_;   // (T) which batch entry each token belongs to
};

}  // namespace sinkserve

// The CPU backend (Llama-family and MPT layers): fp32 everywhere, on the SIMD fast paths of
// kernels/cpu/fast_ops.h (the readable oracle is kernels/cpu/ops.h, which
// the fast paths and the CUDA kernels are tested against). The CUDA backend
// is tested against this backend end to end. It runs a whole Batch per
// Forward call and spreads matmuls and attention over a small thread pool.
#pragma once

#include <memory>
#include <vector>

#include "engine/backend.h"
#include "kernels/batch_validation.h"
#include "kernels/cpu/fast_ops.h"
#include "kernels/cpu/thread_pool.h"

namespace sinkserve {

class CpuBackend final : public Backend {
 public:
  // threads = 0 uses every core. Quantized weights stay in their blocks and
  // run on the integer kernels (kernels/cpu/quant_ops.h), unless
  // `dequantize_weights`: then every weight becomes fp32 at load, the
  // reference path (llama.cpp's dequantized twin, f32 activations). F16 and
  // BF16 weights become fp32 either way.
  static absl::StatusOr<std::unique_ptr<CpuBackend>> Create(Model model, int32_t threads,
                                                            bool dequantize_weights = false);

  std::string_view name() const override { return "cpu"; }
  const ModelConfig& config() const override { return model_.config; }
  absl::StatusOr<CacheId> CreateCache(const CacheGeometry& geometry) override;
  void DestroyCache(CacheId id) override;
  absl::Status ResetCache(CacheId id) override;
  std::string KvLayout() const override;
  absl::StatusOr<std::string> ExportCache(CacheId id) const override;
  KvShape ExportShape() const override;
  absl::StatusOr<std::string> ExportCacheSlots(CacheId id, int32_t first, int32_t count) const override;
  absl::Status ImportCache(CacheId id, int64_t consumed, std::string_view bytes) override;
  using Backend::Forward;
  absl::Status Forward(const Batch& batch, std::vector<float>* logits, std::vector<float>* hidden) override;
  bool SupportsCandidates() const override { return true; }
  absl::Status CommitCandidate(CacheId id, int32_t index) override;

  // Bytes a cache with this geometry holds (K and V, every layer).
  int64_t CacheBytes(const CacheGeometry& geometry) const override;

 private:
  // CacheState (kernels/batch_validation.h) holds the geometry and the tokens
  // appended so far (the absolute index of the next).
  // A zero-filled float buffer from an anonymous mapping: the kernel hands
  // out zero pages as they are first touched, so making a large cache costs
  // no time on the engine thread, and a failed mapping is a status, not an
  // exception.
  class ZeroedFloats {
   public:
    ZeroedFloats() = default;
    ~ZeroedFloats();
    ZeroedFloats(const ZeroedFloats&) = delete;
    ZeroedFloats& operator=(const ZeroedFloats&) = delete;
    bool Map(size_t floats);  // false when the memory cannot be had
    float& operator[](int64_t i) { return data_[i]; }
    const float& operator[](int64_t i) const { return data_[i]; }

   private:
    float* data_ = nullptr;
    size_t bytes_ = 0;
  };

  struct Cache : CacheState {
    // Slot-minor so attention vectorizes over slots (see cpu::RotatedAttention).
    ZeroedFloats k;   // (n_layers, n_kv_heads, head_dim, slots), keys rotated by their slot index
    ZeroedFloats v;   // (n_layers, n_kv_heads, head_dim, slots)
    // The latest step's contrastive candidates (SeqEntry::candidates): their
    // K/V, not in the ring until CommitCandidate. Keys un-rotated.
    int32_t candidates = 0;
    std::vector<float> candidate_k;  // (n_layers, candidates, kv_dim)
    std::vector<float> candidate_v;  // (n_layers, candidates, kv_dim)
  };

  // Scratch for one forward over a slice of the batch. T = the slice's tokens.
  struct Workspace {
    std::vector<float> x;      // (T, dim) residual stream
    std::vector<float> xb;     // (max(T, logit rows), dim) normed input
    std::vector<float> qkv;    // (T, q_dim + 2 * kv_dim): q | k | v per token
    std::vector<float> att;    // (T, q_dim)
    std::vector<float> h13;    // (T, 2 * hidden_dim): gate | up per token (GELU: up only)
    std::vector<float> hb;     // (T, hidden_dim) MLP activation
    std::vector<float> attn;   // (threads, per-query attention scratch)
    std::vector<uint8_t> xq;   // (T, ActivationRowBytes) activations quantized for a block-typed matmul
    std::vector<int32_t> token_seq;  // (T) the batch entry each token belongs to
  };

  // Entries [first, last) of a batch, whose tokens and logit rows are contiguous.
  struct Slice {
    int32_t first = 0, last = 0;
    int32_t token_begin = 0, tokens = 0;
    int32_t row_begin = 0, rows = 0;
  };

  // A matrix of the forward pass, (n, k): fp32, transposed and padded for
  // cpu::MatMulTransposed, or the file's quantized rows, stacked in output
  // order (QKV and gate/up are each one matrix).
  struct CpuMatrix {
    int32_t n = 0;
    int32_t k = 0;
    std::vector<float> wt;      // fp32: (k, pad(n)); empty when quantized
    std::vector<Weight> parts;  // quantized: row blocks of (rows_i, k)
  };
  static CpuMatrix MakeMatrix(const std::vector<const Weight*>& stacked, bool dequantize);

  CpuBackend(Model model, int32_t threads, bool dequantize_weights);
  absl::Status ValidateBatch(const Batch& batch) const;
  void EnsureScratch(Workspace& ws, const Slice& slice);
  // Runs a slice through every layer and writes its logit rows. With
  // `parallel_ops`, each matmul and the attention spread over the pool;
  // otherwise the caller is already one of several slices run in parallel.
  // The slice's workspace must have been sized by EnsureScratch.
  void RunSlice(const Batch& batch, const Slice& slice, Workspace& ws, bool parallel_ops, float* logits,
                float* hidden);
  void RunLayer(const Batch& batch, const Slice& slice, Workspace& ws, bool parallel_ops, int32_t layer);
  // Appends one token's K/V to `layer` of `cache` at `slot`: k (kv_dim,
  // rotated in place by the slot index for RoPE) and v.
  void WriteSlot(Cache& cache, int32_t layer, int32_t slot, float* k, const float* v) const;
  // The model's norm (RMSNorm, or LayerNorm with `bias` if not empty) of
  // `tokens` rows of dim.
  void Norm(float* out, const float* x, const std::vector<float>& weight, const std::vector<float>& bias,
            int32_t tokens) const;
  // out (tokens, m.n) = in (tokens, m.k) . m^T.
  void MatMul(float* out, const float* in, const CpuMatrix& m, int32_t tokens, Workspace& ws, bool parallel);

  // A layer's matrices, projections that read the same input stacked.
  struct CpuLayer {
    CpuMatrix wqkv;  // [wq; wk; wv]: (q_dim + 2 * kv_dim, dim)
    CpuMatrix wo;    // (dim, q_dim)
    CpuMatrix w13;   // [w1; w3] (gate; up): (2 * hidden_dim, dim); GELU: w3 alone
    CpuMatrix w2;    // (dim, hidden_dim)
    std::vector<float> bqkv;  // [bq; bk; bv] (q_dim + 2 * kv_dim); empty without attention biases
  };
  int32_t qkv_dim() const { return model_.config.q_dim() + 2 * model_.config.kv_dim(); }

  Model model_;                      // embedding and norms; layer matrices and biases live in layers_
  std::vector<CpuLayer> layers_;
  CpuMatrix classifier_;             // (vocab_size, dim)
  ThreadPool pool_;
  cpu::RopeTable rope_;
  std::vector<float> alibi_slopes_;  // (n_heads) for ALiBi models; empty with RoPE
  std::vector<std::unique_ptr<Cache>> caches_;  // indexed by CacheId; null when free

  int64_t attention_scratch_ = 0;       // floats one query's attention needs, for the largest cache made
  std::vector<Workspace> workspaces_;  // one per slice run at once, grown as needed
};

}  // namespace sinkserve

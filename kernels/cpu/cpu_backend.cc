#include "kernels/cpu/cpu_backend.h"

#include <algorithm>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_format.h"
#include "engine/status_macros.h"

namespace sinkserve {

absl::StatusOr<std::unique_ptr<CpuBackend>> CpuBackend::Create(Model model, int32_t threads) {
  RETURN_IF_ERROR(model.config.Validate());
  RETURN_IF_ERROR(model.ValidateWeights());
  if (model.config.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrFormat("RoPE needs an even head_dim, got %d", model.config.head_dim));
  }
  return std::unique_ptr<CpuBackend>(new CpuBackend(std::move(model), threads));
}

namespace {

// Rows of b appended under the rows of a: both (rows, k) row-major.
std::vector<float> StackRows(std::vector<float> a, const std::vector<float>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

}  // namespace

CpuBackend::CpuBackend(Model model, int32_t threads) : model_(std::move(model)), pool_(threads) {
  // Projections that read the same input are stacked into one matmul (QKV;
  // gate and up), and every matrix is kept as cpu::TransposePadded for
  // cpu::MatMulTransposed. The layer matrices in model_ are freed; the
  // embedding stays (vocab, dim) for the row gather.
  const ModelConfig& c = model_.config;
  for (LayerWeights& l : model_.weights.layers) {
    CpuLayer& out = layers_.emplace_back();
    out.wqkv = cpu::TransposePadded(StackRows(StackRows(std::move(l.wq), l.wk), l.wv), qkv_dim(), c.dim);
    out.wo = cpu::TransposePadded(l.wo, c.dim, c.q_dim());
    out.w13 = cpu::TransposePadded(StackRows(std::move(l.w1), l.w3), 2 * c.hidden_dim, c.dim);
    out.w2 = cpu::TransposePadded(l.w2, c.dim, c.hidden_dim);
    l = LayerWeights{.attn_norm = std::move(l.attn_norm), .ffn_norm = std::move(l.ffn_norm)};
  }
  classifier_t_ = cpu::TransposePadded(model_.weights.Classifier(), c.vocab_size, c.dim);
  model_.weights.classifier.clear();
  model_.weights.classifier.shrink_to_fit();
}

int64_t CpuBackend::CacheBytes(const CacheGeometry& g) const {
  const ModelConfig& c = model_.config;
  return 2 * int64_t{c.n_layers} * g.Slots() * c.kv_dim() * int64_t{sizeof(float)};
}

absl::StatusOr<CacheId> CpuBackend::CreateCache(const CacheGeometry& geometry) {
  if (geometry.sinks < 0 || geometry.window < 1 || geometry.ring < geometry.window) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "invalid cache geometry: sinks=%d window=%d ring=%d", geometry.sinks, geometry.window, geometry.ring));
  }
  auto cache = std::make_unique<Cache>();
  cache->geometry = geometry;
  const size_t floats = static_cast<size_t>(CacheBytes(geometry) / 2 / sizeof(float));
  cache->k.assign(floats + cpu::kCachePadding, 0.0f);
  cache->v.assign(floats + cpu::kCachePadding, 0.0f);
  if (cpu::RotatedRopePositions(geometry) > rope_.positions) {
    rope_.Build(model_.config.head_dim, cpu::RotatedRopePositions(geometry), model_.config.rope_theta);
  }
  for (size_t i = 0; i < caches_.size(); ++i) {
    if (!caches_[i]) {
      caches_[i] = std::move(cache);
      return static_cast<CacheId>(i);
    }
  }
  caches_.push_back(std::move(cache));
  return static_cast<CacheId>(caches_.size() - 1);
}

void CpuBackend::DestroyCache(CacheId id) {
  if (id >= 0 && static_cast<size_t>(id) < caches_.size()) caches_[id].reset();
}

absl::Status CpuBackend::ResetCache(CacheId id) {
  if (id < 0 || static_cast<size_t>(id) >= caches_.size() || !caches_[id]) {
    return absl::NotFoundError(absl::StrFormat("no cache with id %d", id));
  }
  caches_[id]->consumed = 0;
  return absl::OkStatus();
}

absl::Status CpuBackend::ValidateBatch(const Batch& batch) const {
  absl::flat_hash_set<CacheId> seen;
  int64_t covered = 0;
  for (const SeqEntry& s : batch.seqs) {
    if (s.cache < 0 || static_cast<size_t>(s.cache) >= caches_.size() || !caches_[s.cache]) {
      return absl::InvalidArgumentError(absl::StrFormat("batch names unknown cache %d", s.cache));
    }
    if (!seen.insert(s.cache).second) {
      return absl::InvalidArgumentError(absl::StrFormat("cache %d appears twice in one batch", s.cache));
    }
    const Cache& c = *caches_[s.cache];
    if (s.n_past != c.consumed) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "cache %d has consumed %d tokens but the batch says n_past=%d", s.cache, c.consumed, s.n_past));
    }
    const int32_t max_chunk = c.geometry.ring - c.geometry.window + 1;
    if (s.n_tokens < 1 || s.n_tokens > max_chunk) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "cache %d takes 1..%d tokens per step, got %d", s.cache, max_chunk, s.n_tokens));
    }
    if (s.token_begin != covered || s.token_begin + int64_t{s.n_tokens} > static_cast<int64_t>(batch.tokens.size())) {
      return absl::InvalidArgumentError("batch entries must cover Batch::tokens in order");
    }
    covered += s.n_tokens;
  }
  if (covered != static_cast<int64_t>(batch.tokens.size())) {
    return absl::InvalidArgumentError("batch has tokens no entry owns");
  }
  for (int32_t id : batch.tokens) {
    if (id < 0 || id >= model_.config.vocab_size) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "token id %d is out of range for a vocabulary of %d", id, model_.config.vocab_size));
    }
  }
  return absl::OkStatus();
}

void CpuBackend::EnsureScratch(int32_t tokens, int32_t logit_rows) {
  const ModelConfig& c = model_.config;
  auto grow = [](std::vector<float>& v, int64_t n) {
    if (static_cast<int64_t>(v.size()) < n) v.resize(n);
  };
  grow(x_, int64_t{tokens} * c.dim);
  grow(xb_, int64_t{std::max(tokens, logit_rows)} * c.dim);
  grow(qkv_, int64_t{tokens} * qkv_dim());
  grow(att_, int64_t{tokens} * c.q_dim());
  grow(h13_, int64_t{tokens} * 2 * c.hidden_dim);
  grow(hb_, int64_t{tokens} * c.hidden_dim);
  int64_t per_query = 0;
  for (const auto& cache : caches_) {
    if (cache) per_query = std::max(per_query, cpu::RotatedAttentionScratch(cache->geometry, c.head_dim, c.n_heads / c.n_kv_heads));
  }
  grow(attn_scratch_, per_query * pool_.size());
}

void CpuBackend::MatMul(float* out, const float* in, const std::vector<float>& wt, int32_t tokens,
                        int32_t n, int32_t k) {
  // Threads split the columns in whole tiles.
  const int64_t tiles = (n + cpu::kMatMulColumns - 1) / cpu::kMatMulColumns;
  pool_.ParallelFor(tiles, int64_t{tokens} * n * k, [&](int64_t begin, int64_t end, int32_t) {
    cpu::MatMulTransposed(out, in, wt.data(), tokens, n, k, static_cast<int32_t>(begin * cpu::kMatMulColumns),
                          static_cast<int32_t>(std::min<int64_t>(end * cpu::kMatMulColumns, n)));
  });
}

void CpuBackend::RunLayer(const Batch& batch, int32_t layer) {
  const ModelConfig& c = model_.config;
  const LayerWeights& norms = model_.weights.layers[layer];
  const CpuLayer& w = layers_[layer];
  const int32_t T = static_cast<int32_t>(batch.tokens.size());
  const int32_t kv_dim = c.kv_dim();
  const int32_t qkv = qkv_dim();

  for (int32_t t = 0; t < T; ++t) {
    cpu::RmsNorm(&xb_[int64_t{t} * c.dim], &x_[int64_t{t} * c.dim], norms.attn_norm.data(), c.dim, c.norm_eps);
  }
  MatMul(qkv_.data(), xb_.data(), w.wqkv, T, qkv, c.dim);

  // Append every new token's K/V at its slot before attending (the ring
  // holds window + chunk - 1 slots, so nothing a chunk token still needs is
  // overwritten). Keys are rotated once here, by their slot index; see
  // cpu::RotatedAttention for why that is exact.
  for (const SeqEntry& s : batch.seqs) {
    Cache& cache = *caches_[s.cache];
    const CacheGeometry& g = cache.geometry;
    const int64_t slots = g.Slots();
    float* k_layer = &cache.k[int64_t{layer} * kv_dim * slots];  // (n_kv_heads, head_dim, slots)
    float* v_layer = &cache.v[int64_t{layer} * kv_dim * slots];
    for (int32_t i = 0; i < s.n_tokens; ++i) {
      const int32_t slot = g.Slot(s.n_past + i);
      float* k_new = &qkv_[int64_t{s.token_begin + i} * qkv + c.q_dim()];  // (n_kv_heads, head_dim)
      const float* v_new = k_new + kv_dim;
      for (int32_t kv = 0; kv < c.n_kv_heads; ++kv) cpu::Rope(k_new + kv * c.head_dim, c.head_dim, slot, rope_);
      for (int32_t e = 0; e < kv_dim; ++e) {
        k_layer[e * slots + slot] = k_new[e];
        v_layer[e * slots + slot] = v_new[e];
      }
    }
  }

  // Attention: one work item per (token, kv head), with the query heads that
  // share the kv head.
  const int32_t group = c.n_heads / c.n_kv_heads;
  const int64_t per_query = attn_scratch_.size() / pool_.size();
  int64_t work = 0;
  for (const SeqEntry& s : batch.seqs) {
    work += int64_t{s.n_tokens} * caches_[s.cache]->geometry.MaxPositions() * c.q_dim() * 2;
  }
  pool_.ParallelFor(int64_t{T} * c.n_kv_heads, work, [&](int64_t begin, int64_t end, int32_t part) {
    for (int64_t u = begin; u < end; ++u) {
      const int32_t t = static_cast<int32_t>(u / c.n_kv_heads);
      const int32_t kv = static_cast<int32_t>(u % c.n_kv_heads);
      const SeqEntry& s = batch.seqs[token_seq_[t]];
      const Cache& cache = *caches_[s.cache];
      const int64_t layer_base = int64_t{layer} * kv_dim * cache.geometry.Slots();
      cpu::RotatedAttentionArgs args{
          .geometry = &cache.geometry,
          .t = s.n_past + (t - s.token_begin),
          .q = &qkv_[int64_t{t} * qkv],
          .k_cache = &cache.k[layer_base],
          .v_cache = &cache.v[layer_base],
          .out = &att_[int64_t{t} * c.q_dim()],
          .n_heads = c.n_heads,
          .n_kv_heads = c.n_kv_heads,
          .head_dim = c.head_dim,
          .rope = &rope_,
          .scratch = &attn_scratch_[part * per_query],
      };
      cpu::RotatedAttention(args, kv * group, (kv + 1) * group);
    }
  });

  // Output projection and residual.
  MatMul(xb_.data(), att_.data(), w.wo, T, c.dim, c.q_dim());
  for (int64_t i = 0; i < int64_t{T} * c.dim; ++i) x_[i] += xb_[i];

  // SwiGLU MLP and residual.
  for (int32_t t = 0; t < T; ++t) {
    cpu::RmsNorm(&xb_[int64_t{t} * c.dim], &x_[int64_t{t} * c.dim], norms.ffn_norm.data(), c.dim, c.norm_eps);
  }
  MatMul(h13_.data(), xb_.data(), w.w13, T, 2 * c.hidden_dim, c.dim);
  for (int32_t t = 0; t < T; ++t) {
    const float* gate = &h13_[int64_t{t} * 2 * c.hidden_dim];
    cpu::FastSwiGlu(&hb_[int64_t{t} * c.hidden_dim], gate, gate + c.hidden_dim, c.hidden_dim);
  }
  MatMul(xb_.data(), hb_.data(), w.w2, T, c.dim, c.hidden_dim);
  for (int64_t i = 0; i < int64_t{T} * c.dim; ++i) x_[i] += xb_[i];
}

absl::Status CpuBackend::Forward(const Batch& batch, std::vector<float>* logits) {
  RETURN_IF_ERROR(ValidateBatch(batch));
  const ModelConfig& c = model_.config;
  const int32_t T = static_cast<int32_t>(batch.tokens.size());
  const int32_t rows = batch.LogitRows();
  EnsureScratch(T, rows);

  token_seq_.resize(T);
  for (size_t e = 0; e < batch.seqs.size(); ++e) {
    const SeqEntry& s = batch.seqs[e];
    std::fill_n(token_seq_.begin() + s.token_begin, s.n_tokens, static_cast<int32_t>(e));
  }
  for (int32_t t = 0; t < T; ++t) {
    std::copy_n(&model_.weights.token_embedding[int64_t{batch.tokens[t]} * c.dim], c.dim, &x_[int64_t{t} * c.dim]);
  }
  for (int32_t layer = 0; layer < c.n_layers; ++layer) RunLayer(batch, layer);
  for (const SeqEntry& s : batch.seqs) caches_[s.cache]->consumed += s.n_tokens;

  // Final norm for the rows that want logits, packed in entry order.
  int32_t row = 0;
  for (const SeqEntry& s : batch.seqs) {
    const int32_t first = s.all_logits ? 0 : s.n_tokens - 1;
    for (int32_t i = first; i < s.n_tokens; ++i, ++row) {
      cpu::RmsNorm(&xb_[int64_t{row} * c.dim], &x_[int64_t{s.token_begin + i} * c.dim],
                   model_.weights.final_norm.data(), c.dim, c.norm_eps);
    }
  }
  logits->resize(int64_t{rows} * c.vocab_size);
  MatMul(logits->data(), xb_.data(), classifier_t_, rows, c.vocab_size, c.dim);
  return absl::OkStatus();
}

}  // namespace sinkserve

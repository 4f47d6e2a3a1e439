#include "kernels/cpu/cpu_backend.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <cstdint>
#include <limits>

#include "absl/strings/str_format.h"
#include "engine/status_macros.h"
#include "kernels/batch_validation.h"
#include "kernels/cpu/quant_ops.h"

namespace sinkserve {

absl::StatusOr<std::unique_ptr<CpuBackend>> CpuBackend::Create(Model model, int32_t threads,
                                                               bool dequantize_weights) {
  RETURN_IF_ERROR(model.config.Validate());
  RETURN_IF_ERROR(model.ValidateWeights());
  if (!model.config.alibi() && model.config.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrFormat("RoPE needs an even head_dim, got %d", model.config.head_dim));
  }
  return std::unique_ptr<CpuBackend>(new CpuBackend(std::move(model), threads, dequantize_weights));
}

namespace {

// Below this many tokens per thread a step runs as one slice (see Forward).
constexpr int64_t kMinSliceTokens = 4;

}  // namespace

CpuBackend::CpuMatrix CpuBackend::MakeMatrix(const std::vector<const Weight*>& stacked, bool dequantize) {
  CpuMatrix m;
  m.k = static_cast<int32_t>(stacked.front()->cols);
  bool quantized = !dequantize;
  for (const Weight* w : stacked) {
    m.n += static_cast<int32_t>(w->rows);
    quantized = quantized && cpu::IsQuantized(w->type);
  }
  if (quantized) {
    for (const Weight* w : stacked) m.parts.push_back(*w);  // shares the file's bytes
    return m;
  }
  // Rows of every part, one under the other, as fp32 (n, k).
  std::vector<float> rows;
  rows.reserve(static_cast<size_t>(m.n) * m.k);
  for (const Weight* w : stacked) {
    if (w->type == GgmlType::kF32) {
      rows.insert(rows.end(), w->f32(), w->f32() + w->rows * w->cols);
    } else {
      const std::vector<float> values = w->ToF32();
      rows.insert(rows.end(), values.begin(), values.end());
    }
  }
  m.wt = cpu::TransposePadded(rows, m.n, m.k);
  return m;
}

CpuBackend::CpuBackend(Model model, int32_t threads, bool dequantize_weights)
    : model_(std::move(model)), pool_(threads) {
  // Projections that read the same input are stacked into one matmul (QKV;
  // gate and up). fp32 matrices are kept as cpu::TransposePadded for
  // cpu::MatMulTransposed; quantized ones stay in the file's mapping. The
  // model's own handles on the layer matrices are dropped; the embedding
  // stays (vocab, dim) for the row gather.
  const bool dq = dequantize_weights;
  for (LayerWeights& l : model_.weights.layers) {
    CpuLayer& out = layers_.emplace_back();
    out.wqkv = MakeMatrix({&l.wq, &l.wk, &l.wv}, dq);
    out.wo = MakeMatrix({&l.wo}, dq);
    out.w13 = model_.config.ffn == FfnKind::kGelu ? MakeMatrix({&l.w3}, dq) : MakeMatrix({&l.w1, &l.w3}, dq);
    out.w2 = MakeMatrix({&l.w2}, dq);
    for (Weight* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w1, &l.w2, &l.w3}) w->Release();
    // Biases stacked like the projections they follow, added in one pass.
    for (std::vector<float>* b : {&l.bq, &l.bk, &l.bv}) {
      out.bqkv.insert(out.bqkv.end(), b->begin(), b->end());
      *b = {};
    }
  }
  classifier_ = MakeMatrix({&model_.weights.Classifier()}, dq);
  if (model_.config.alibi()) alibi_slopes_ = model_.config.AlibiSlopes();
  model_.weights.classifier.Release();
  // The gather reads one embedding row per token: fp32 or blocks both work,
  // but the reference path dequantizes everything.
  if (dq && model_.weights.token_embedding.type != GgmlType::kF32) {
    const Weight& e = model_.weights.token_embedding;
    model_.weights.token_embedding = Weight::FromF32(e.ToF32(), e.rows, e.cols);
  }
}

CpuBackend::ZeroedFloats::~ZeroedFloats() {
  if (data_ != nullptr) ::munmap(data_, bytes_);
}

bool CpuBackend::ZeroedFloats::Map(size_t floats) {
  if (floats == 0 || floats > SIZE_MAX / sizeof(float)) return false;
  void* p = ::mmap(nullptr, floats * sizeof(float), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return false;
  data_ = static_cast<float*>(p);
  bytes_ = floats * sizeof(float);
  return true;
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
  if (!cache->k.Map(floats + cpu::kCachePadding) || !cache->v.Map(floats + cpu::kCachePadding)) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "cannot allocate a KV cache of %d bytes (sinks %d, window %d): out of memory", CacheBytes(geometry),
        geometry.sinks, geometry.window));
  }
  attention_scratch_ = std::max(attention_scratch_, cpu::RotatedAttentionScratch(geometry, model_.config.head_dim,
                                                                                model_.config.n_heads / model_.config.n_kv_heads));
  if (cpu::RotatedRopePositions(geometry) > rope_.positions) {
    const ModelConfig& c = model_.config;
    rope_.Build(c.head_dim, cpu::RotatedRopePositions(geometry), c.rope_theta, c.rope_freq_scale,
                c.rope_freq_factors);
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
  caches_[id]->candidates = 0;
  return absl::OkStatus();
}

std::string CpuBackend::KvLayout() const {
  // f32, layer-major then slot-minor per (kv head, dim) row; RoPE keys
  // rotated by their slot index (see cache_geometry.h), ALiBi keys as they are.
  return model_.config.alibi() ? "cpu:f32:rows-by-slot:keys-unrotated:v1"
                               : "cpu:f32:rows-by-slot:keys-rotated-by-slot:v1";
}

namespace {

// The slots a cache that consumed `consumed` tokens has written.
int32_t UsedSlots(const CacheGeometry& g, int64_t consumed) {
  return static_cast<int32_t>(std::min<int64_t>(consumed, g.Slots()));
}

}  // namespace

absl::StatusOr<std::string> CpuBackend::ExportCache(CacheId id) const {
  if (id < 0 || static_cast<size_t>(id) >= caches_.size() || !caches_[id]) {
    return absl::NotFoundError(absl::StrFormat("no cache with id %d", id));
  }
  return ExportCacheSlots(id, 0, UsedSlots(caches_[id]->geometry, caches_[id]->consumed));
}

Backend::KvShape CpuBackend::ExportShape() const {
  return {2 * int64_t{model_.config.n_layers} * model_.config.kv_dim(), int64_t{sizeof(float)}};
}

absl::StatusOr<std::string> CpuBackend::ExportCacheSlots(CacheId id, int32_t first, int32_t count) const {
  if (id < 0 || static_cast<size_t>(id) >= caches_.size() || !caches_[id]) {
    return absl::NotFoundError(absl::StrFormat("no cache with id %d", id));
  }
  const Cache& cache = *caches_[id];
  const int64_t used = UsedSlots(cache.geometry, cache.consumed);
  if (first < 0 || count < 0 || first + int64_t{count} > used) {
    return absl::InvalidArgumentError(
        absl::StrFormat("slots %d..%d are not all in use (%d are)", first, first + int64_t{count}, used));
  }
  const int64_t slots = cache.geometry.Slots();
  const int64_t rows = int64_t{model_.config.n_layers} * model_.config.kv_dim();
  // Reserved and appended row by row: the bytes are written once, not zeroed first.
  std::string out;
  out.reserve(static_cast<size_t>(2 * rows * count) * sizeof(float));
  for (const ZeroedFloats* part : {&cache.k, &cache.v}) {
    for (int64_t r = 0; r < rows; ++r) {
      out.append(reinterpret_cast<const char*>(&(*part)[r * slots + first]), static_cast<size_t>(count) * sizeof(float));
    }
  }
  return out;
}

absl::Status CpuBackend::ImportCache(CacheId id, int64_t consumed, std::string_view bytes) {
  if (id < 0 || static_cast<size_t>(id) >= caches_.size() || !caches_[id]) {
    return absl::NotFoundError(absl::StrFormat("no cache with id %d", id));
  }
  Cache& cache = *caches_[id];
  if (consumed < 0) return absl::InvalidArgumentError("a cache cannot have consumed a negative number of tokens");
  const int64_t slots = cache.geometry.Slots();
  const int64_t used = UsedSlots(cache.geometry, consumed);
  const int64_t rows = int64_t{model_.config.n_layers} * model_.config.kv_dim();
  const int64_t want = 2 * rows * used * int64_t{sizeof(float)};
  if (static_cast<int64_t>(bytes.size()) != want) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the stored cache has %d bytes; this model's cache of %d slots in use needs %d", bytes.size(), used, want));
  }
  const char* src = bytes.data();
  for (ZeroedFloats* part : {&cache.k, &cache.v}) {
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(&(*part)[r * slots], src, static_cast<size_t>(used) * sizeof(float));
      src += used * sizeof(float);
    }
  }
  cache.consumed = consumed;
  cache.candidates = 0;
  return absl::OkStatus();
}

absl::Status CpuBackend::ValidateBatch(const Batch& batch) const {
  return sinkserve::ValidateBatch(batch, model_.config.vocab_size, [this](CacheId id) -> const CacheState* {
    if (id < 0 || static_cast<size_t>(id) >= caches_.size()) return nullptr;
    return caches_[id].get();
  });
}

void CpuBackend::EnsureScratch(Workspace& ws, const Slice& slice) {
  const ModelConfig& c = model_.config;
  auto grow = [](auto& v, int64_t n) {
    if (static_cast<int64_t>(v.size()) < n) v.resize(n);
  };
  const int64_t T = slice.tokens;
  grow(ws.x, T * c.dim);
  grow(ws.xb, std::max<int64_t>(T, slice.rows) * c.dim);
  grow(ws.qkv, T * qkv_dim());
  grow(ws.att, T * c.q_dim());
  grow(ws.h13, T * 2 * c.hidden_dim);
  grow(ws.hb, T * c.hidden_dim);
  grow(ws.token_seq, T);
  grow(ws.attn, attention_scratch_ * pool_.size());
}

void CpuBackend::MatMul(float* out, const float* in, const CpuMatrix& m, int32_t tokens, Workspace& ws,
                        bool parallel) {
  const int32_t n = m.n, k = m.k;
  if (m.parts.empty()) {
    if (!parallel) {
      cpu::MatMulTransposed(out, in, m.wt.data(), tokens, n, k, 0, n);
      return;
    }
    // Threads split the columns in whole tiles.
    const int64_t tiles = (n + cpu::kMatMulColumns - 1) / cpu::kMatMulColumns;
    pool_.ParallelFor(tiles, int64_t{tokens} * n * k, [&](int64_t begin, int64_t end, int32_t) {
      cpu::MatMulTransposed(out, in, m.wt.data(), tokens, n, k, static_cast<int32_t>(begin * cpu::kMatMulColumns),
                            static_cast<int32_t>(std::min<int64_t>(end * cpu::kMatMulColumns, n)));
    });
    return;
  }
  // Block-typed parts: quantize the activations for the part's type (once
  // for consecutive parts that pair with the same layout), then each row's
  // blocks meet every token's.
  int64_t col = 0;
  // Q8_0, Q8_1 and Q8_K rows of one k all differ in size, so the size names
  // the layout the buffer holds.
  int64_t quantized_for = -1;
  for (const Weight& part : m.parts) {
    const int64_t x_bytes = cpu::ActivationRowBytes(part.type, k);
    if (quantized_for != x_bytes) {
      if (static_cast<int64_t>(ws.xq.size()) < tokens * x_bytes) ws.xq.resize(tokens * x_bytes);
      for (int32_t t = 0; t < tokens; ++t) {
        cpu::QuantizeActivations(part.type, in + int64_t{t} * k, k, ws.xq.data() + t * x_bytes);
      }
      quantized_for = x_bytes;
    }
    float* part_out = out + col;
    const uint8_t* xq = ws.xq.data();
    if (!parallel) {
      cpu::QuantMatMul(part_out, n, xq, tokens, part, 0, part.rows);
    } else {
      pool_.ParallelFor(part.rows, int64_t{tokens} * part.rows * k, [&](int64_t begin, int64_t end, int32_t) {
        cpu::QuantMatMul(part_out, n, xq, tokens, part, begin, end);
      });
    }
    col += part.rows;
  }
}

void CpuBackend::WriteSlot(Cache& cache, int32_t layer, int32_t slot, float* k, const float* v) const {
  const ModelConfig& c = model_.config;
  const int32_t kv_dim = c.kv_dim();
  const int64_t slots = cache.geometry.Slots();
  if (!c.alibi()) {
    for (int32_t kv = 0; kv < c.n_kv_heads; ++kv) cpu::Rope(k + kv * c.head_dim, c.head_dim, slot, rope_);
  }
  float* k_layer = &cache.k[int64_t{layer} * kv_dim * slots];  // (n_kv_heads, head_dim, slots)
  float* v_layer = &cache.v[int64_t{layer} * kv_dim * slots];
  for (int32_t d = 0; d < kv_dim; ++d) {
    k_layer[d * slots + slot] = k[d];
    v_layer[d * slots + slot] = v[d];
  }
}

void CpuBackend::Norm(float* out, const float* x, const std::vector<float>& weight, const std::vector<float>& bias,
                      int32_t tokens) const {
  const ModelConfig& c = model_.config;
  for (int32_t t = 0; t < tokens; ++t) {
    const int64_t at = int64_t{t} * c.dim;
    if (c.norm == NormKind::kLayer) {
      cpu::LayerNorm(out + at, x + at, weight.data(), bias.empty() ? nullptr : bias.data(), c.dim, c.norm_eps);
    } else {
      cpu::RmsNorm(out + at, x + at, weight.data(), c.dim, c.norm_eps);
    }
  }
}

void CpuBackend::RunLayer(const Batch& batch, const Slice& slice, Workspace& ws, bool parallel_ops, int32_t layer) {
  const ModelConfig& c = model_.config;
  const LayerWeights& norms = model_.weights.layers[layer];
  const CpuLayer& w = layers_[layer];
  const int32_t T = slice.tokens;
  const int32_t kv_dim = c.kv_dim();
  const int32_t qkv = qkv_dim();

  Norm(ws.xb.data(), ws.x.data(), norms.attn_norm, norms.attn_norm_bias, T);
  MatMul(ws.qkv.data(), ws.xb.data(), w.wqkv, T, ws, parallel_ops);
  if (!w.bqkv.empty()) {  // attention biases (qwen2)
    for (int32_t t = 0; t < T; ++t) {
      float* row = &ws.qkv[int64_t{t} * qkv];
      for (int32_t i = 0; i < qkv; ++i) row[i] += w.bqkv[i];
    }
  }

  // Append every new token's K/V at its slot before attending (the ring
  // holds window + chunk - 1 slots, so nothing a chunk token still needs is
  // overwritten). Keys are rotated once here, by their slot index; see
  // cpu::RotatedAttention for why that is exact.
  for (int32_t e = slice.first; e < slice.last; ++e) {
    const SeqEntry& s = batch.seqs[e];
    Cache& cache = *caches_[s.cache];
    if (s.candidates) {  // kept aside, un-rotated, until one is committed
      for (int32_t i = 0; i < s.n_tokens; ++i) {
        const float* k_new = &ws.qkv[int64_t{s.token_begin - slice.token_begin + i} * qkv + c.q_dim()];
        const int64_t at = (int64_t{layer} * s.n_tokens + i) * kv_dim;
        std::copy_n(k_new, kv_dim, &cache.candidate_k[at]);
        std::copy_n(k_new + kv_dim, kv_dim, &cache.candidate_v[at]);
      }
      continue;
    }
    for (int32_t i = 0; i < s.n_tokens; ++i) {
      float* k_new = &ws.qkv[int64_t{s.token_begin - slice.token_begin + i} * qkv + c.q_dim()];  // (n_kv_heads, head_dim)
      WriteSlot(cache, layer, cache.geometry.Slot(s.n_past + i), k_new, k_new + kv_dim);
    }
  }

  // Attention: one work item per (token, kv head), with the query heads that
  // share the kv head.
  const int32_t group = c.n_heads / c.n_kv_heads;
  const int64_t per_query = attention_scratch_;
  auto attend = [&](int64_t begin, int64_t end, int32_t part) {
    for (int64_t u = begin; u < end; ++u) {
      const int32_t t = static_cast<int32_t>(u / c.n_kv_heads);
      const int32_t kv = static_cast<int32_t>(u % c.n_kv_heads);
      const SeqEntry& s = batch.seqs[ws.token_seq[t]];
      const Cache& cache = *caches_[s.cache];
      const int64_t layer_base = int64_t{layer} * kv_dim * cache.geometry.Slots();
      const int32_t i = slice.token_begin + t - s.token_begin;  // the token's index in its entry
      // A candidate is query n_past with its own key and value beside the cache.
      const int64_t own = (int64_t{layer} * s.n_tokens + i) * kv_dim;
      cpu::RotatedAttentionArgs args{
          .geometry = &cache.geometry,
          .t = s.candidates ? s.n_past : s.n_past + i,
          .q = &ws.qkv[int64_t{t} * qkv],
          .k_cache = &cache.k[layer_base],
          .v_cache = &cache.v[layer_base],
          .out = &ws.att[int64_t{t} * c.q_dim()],
          .n_heads = c.n_heads,
          .n_kv_heads = c.n_kv_heads,
          .head_dim = c.head_dim,
          .rope = &rope_,
          .scratch = &ws.attn[part * per_query],
          .alibi_slopes = alibi_slopes_.empty() ? nullptr : alibi_slopes_.data(),
          .self_k = s.candidates ? &cache.candidate_k[own] : nullptr,
          .self_v = s.candidates ? &cache.candidate_v[own] : nullptr,
      };
      cpu::RotatedAttention(args, kv * group, (kv + 1) * group);
    }
  };
  if (parallel_ops) {
    int64_t work = 0;
    for (int32_t e = slice.first; e < slice.last; ++e) {
      work += int64_t{batch.seqs[e].n_tokens} * caches_[batch.seqs[e].cache]->geometry.MaxPositions() * c.q_dim() * 2;
    }
    pool_.ParallelFor(int64_t{T} * c.n_kv_heads, work, attend);
  } else {
    attend(0, int64_t{T} * c.n_kv_heads, 0);
  }

  // Output projection and residual.
  MatMul(ws.xb.data(), ws.att.data(), w.wo, T, ws, parallel_ops);
  for (int64_t i = 0; i < int64_t{T} * c.dim; ++i) ws.x[i] += ws.xb[i];

  // MLP (SwiGLU, or GELU of the up projection) and residual.
  Norm(ws.xb.data(), ws.x.data(), norms.ffn_norm, norms.ffn_norm_bias, T);
  MatMul(ws.h13.data(), ws.xb.data(), w.w13, T, ws, parallel_ops);
  if (c.ffn == FfnKind::kGelu) {
    cpu::FastGelu(ws.hb.data(), ws.h13.data(), int64_t{T} * c.hidden_dim);
  } else {
    for (int32_t t = 0; t < T; ++t) {
      const float* gate = &ws.h13[int64_t{t} * 2 * c.hidden_dim];
      cpu::FastSwiGlu(&ws.hb[int64_t{t} * c.hidden_dim], gate, gate + c.hidden_dim, c.hidden_dim);
    }
  }
  MatMul(ws.xb.data(), ws.hb.data(), w.w2, T, ws, parallel_ops);
  for (int64_t i = 0; i < int64_t{T} * c.dim; ++i) ws.x[i] += ws.xb[i];
}

void CpuBackend::RunSlice(const Batch& batch, const Slice& slice, Workspace& ws, bool parallel_ops, float* logits,
                          float* hidden) {
  const ModelConfig& c = model_.config;
  for (int32_t e = slice.first; e < slice.last; ++e) {
    const SeqEntry& s = batch.seqs[e];
    std::fill_n(ws.token_seq.begin() + (s.token_begin - slice.token_begin), s.n_tokens, e);
  }
  for (int32_t t = 0; t < slice.tokens; ++t) {
    const int32_t id = batch.tokens[slice.token_begin + t];
    model_.weights.token_embedding.DequantizeRowTo(id, &ws.x[int64_t{t} * c.dim]);
  }
  for (int32_t layer = 0; layer < c.n_layers; ++layer) RunLayer(batch, slice, ws, parallel_ops, layer);
  if (hidden != nullptr) {
    Norm(hidden + int64_t{slice.token_begin} * c.dim, ws.x.data(), model_.weights.final_norm,
         model_.weights.final_norm_bias, slice.tokens);
  }

  // Final norm for the rows that want logits, packed in entry order.
  int32_t row = 0;
  for (int32_t e = slice.first; e < slice.last; ++e) {
    const SeqEntry& s = batch.seqs[e];
    for (int32_t i = s.all_logits ? 0 : s.n_tokens - 1; i < s.n_tokens; ++i, ++row) {
      Norm(&ws.xb[int64_t{row} * c.dim], &ws.x[int64_t{s.token_begin - slice.token_begin + i} * c.dim],
           model_.weights.final_norm, model_.weights.final_norm_bias, 1);
    }
  }
  MatMul(logits + int64_t{slice.row_begin} * c.vocab_size, ws.xb.data(), classifier_, slice.rows, ws, parallel_ops);
}

absl::Status CpuBackend::CommitCandidate(CacheId id, int32_t index) {
  if (id < 0 || static_cast<size_t>(id) >= caches_.size() || !caches_[id]) {
    return absl::NotFoundError(absl::StrFormat("no cache with id %d", id));
  }
  Cache& cache = *caches_[id];
  if (index < 0 || index >= cache.candidates) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "cache %d has %d candidates from its latest step; cannot commit candidate %d", id, cache.candidates, index));
  }
  // RunLayer's append for a fed token, from the kept K/V (whose keys the
  // rotation may change in place: they are dropped after this).
  const int32_t kv_dim = model_.config.kv_dim();
  const int32_t slot = cache.geometry.Slot(cache.consumed);
  for (int32_t layer = 0; layer < model_.config.n_layers; ++layer) {
    const int64_t at = (int64_t{layer} * cache.candidates + index) * kv_dim;
    WriteSlot(cache, layer, slot, &cache.candidate_k[at], &cache.candidate_v[at]);
  }
  ++cache.consumed;
  cache.candidates = 0;
  return absl::OkStatus();
}

absl::Status CpuBackend::Forward(const Batch& batch, std::vector<float>* logits, std::vector<float>* hidden) {
  RETURN_IF_ERROR(ValidateBatch(batch));
  const int32_t n_seqs = static_cast<int32_t>(batch.seqs.size());
  logits->resize(int64_t{batch.LogitRows()} * model_.config.vocab_size);
  if (hidden != nullptr) hidden->resize(batch.tokens.size() * static_cast<size_t>(model_.config.dim));
  for (const SeqEntry& s : batch.seqs) {
    Cache& cache = *caches_[s.cache];
    cache.candidates = 0;  // a step forgets the previous step's candidates
    if (s.candidates) {
      const size_t floats = static_cast<size_t>(model_.config.n_layers) * s.n_tokens * model_.config.kv_dim();
      cache.candidate_k.resize(floats);
      cache.candidate_v.resize(floats);
    }
  }

  // Slices of contiguous entries with about equal token counts, one per
  // thread: each slice runs whole sequences through every layer with no
  // synchronisation inside the step. Each slice streams every weight once,
  // so more slices than threads would only read the weights more often (the
  // block kernels amortize a weight block over up to 16 tokens). A batch of
  // few tokens, or a single sequence, is one slice whose ops spread over the
  // pool. Measured on the 2-core dev box (85M Q8_0, aggregate tok/s):
  // batch 4 in 1/2/4 slices 475/386-425/235-250; batch 16 in 1/2/4
  // 569-585/606-633/566-577; batch 64 in 2/4/8 816-838/779-813/700-712.
  const int32_t threads = pool_.size();
  const int64_t total = static_cast<int64_t>(batch.tokens.size());
  const int32_t parts =
      total < kMinSliceTokens * threads ? 1 : static_cast<int32_t>(std::min<int64_t>(n_seqs, threads));
  std::vector<Slice> slices(parts);
  for (int32_t p = 0, e = 0, row = 0; p < parts; ++p) {
    Slice& slice = slices[p];
    slice.first = e;
    slice.token_begin = batch.seqs[e].token_begin;
    slice.row_begin = row;
    // Take entries while their middle falls within this slice's share of the
    // tokens, leaving at least one entry for each later slice.
    const int64_t target = total * (p + 1) / parts;
    do {
      row += batch.seqs[e].all_logits ? batch.seqs[e].n_tokens : 1;
      ++e;
    } while (e < n_seqs - (parts - 1 - p) &&
             (p == parts - 1 || 2 * int64_t{batch.seqs[e].token_begin} + batch.seqs[e].n_tokens <= 2 * target));
    slice.last = e;
    slice.tokens = (e < n_seqs ? batch.seqs[e].token_begin : static_cast<int32_t>(total)) - slice.token_begin;
    slice.rows = row - slice.row_begin;
  }
  // One workspace per thread, sized for the largest slice.
  Slice largest;
  for (const Slice& slice : slices) {
    largest.tokens = std::max(largest.tokens, slice.tokens);
    largest.rows = std::max(largest.rows, slice.rows);
  }
  const int32_t workers = std::min(parts, threads);
  if (static_cast<int32_t>(workspaces_.size()) < workers) workspaces_.resize(workers);
  float* hidden_out = hidden != nullptr ? hidden->data() : nullptr;
  for (int32_t w = 0; w < workers; ++w) EnsureScratch(workspaces_[w], largest);
  if (parts == 1) {
    RunSlice(batch, slices[0], workspaces_[0], /*parallel_ops=*/true, logits->data(), hidden_out);
  } else {
    pool_.ForEach(parts, [&](int64_t p, int32_t thread) {
      RunSlice(batch, slices[p], workspaces_[thread], /*parallel_ops=*/false, logits->data(), hidden_out);
    });
  }
  for (const SeqEntry& s : batch.seqs) {
    Cache& cache = *caches_[s.cache];
    if (s.candidates) {
      cache.candidates = s.n_tokens;
    } else {
      cache.consumed += s.n_tokens;
    }
  }
  return absl::OkStatus();
}

}  // namespace sinkserve

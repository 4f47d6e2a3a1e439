#include "kernels/cuda/cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <optional>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/status_macros.h"
#include "kernels/batch_validation.h"
#include "kernels/cuda/argmax.cuh"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/attention_plan.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/device_weights.h"
#include "kernels/cuda/embedding.cuh"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/kv_append.cuh"
#include "kernels/cuda/kv_pool.h"
#include "kernels/cuda/prefill_attention.cuh"
#include "kernels/cuda/rms_norm.cuh"
#include "kernels/cuda/step_desc.h"
#include "kernels/cuda/swiglu.cuh"

namespace sinkserve {

using cuda::DevicePtr;
using cuda::DType;
using cuda::PinnedPtr;

namespace {

constexpr int64_t kCublasWorkspaceBytes = int64_t{32} << 20;
constexpr int32_t kMaxStepTokens = 65535;  // attention's grid.z
constexpr int32_t kMaxGraphTokens = 1024;  // larger steps are prefill-sized: launch overhead is noise
constexpr size_t kMaxGraphs = 32;          // captured step shapes kept, least recently used evicted
constexpr size_t kMaxSightings = 4096;     // shapes remembered as seen once, before capture

absl::StatusOr<DType> ParseDType(const std::string& name) {
  if (name == "fp16") return DType::kF16;
  if (name == "bf16") return DType::kBF16;
  return absl::InvalidArgumentError(absl::StrFormat("unknown CUDA dtype '%s' (expected fp16 or bf16)", name));
}

double GiB(int64_t bytes) { return static_cast<double>(bytes) / double(int64_t{1} << 30); }

}  // namespace

bool CudaDevicePresent() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return count > 0;
}

// Everything device-side. One stream; a step enqueues all its work and
// synchronises once, when the logits or ids come back.
struct CudaBackend::Impl {
  struct Cache {
    CacheState state;     // geometry + consumed, as ValidateBatch sees it
    int64_t pool_offset;  // bytes from the pool base
  };

  // Byte offsets of a step's metadata for up to T tokens, in one buffer sent
  // in one copy. They depend only on T, so a captured graph keeps its pointers:
  //   ids (T) | token_seq (T) | logit rows (T) | decode tokens (T) | tiles (T) | SeqDesc (T)
  struct MetaLayout {
    explicit MetaLayout(int64_t T)
        : token_seq(4 * T), rows(8 * T), decode(12 * T), tiles(16 * T),
          seqs((16 * T + T * int64_t{sizeof(cuda::PrefillTile)} + 15) / 16 * 16),
          bytes(seqs + T * int64_t{sizeof(cuda::SeqDesc)}) {}
    int64_t ids = 0, token_seq, rows, decode, tiles, seqs, bytes;
  };

  // One step as the kernels see it: device pointers into the metadata, counts.
  struct StepView {
    int32_t tokens = 0, rows = 0, splits = 1;
    int32_t n_decode = 0, n_tiles = 0;
    const int32_t* ids = nullptr;
    const int32_t* token_seq = nullptr;
    const int32_t* rows_index = nullptr;
    const int32_t* decode_tokens = nullptr;  // null when every token is a decode token, in order
    const cuda::PrefillTile* tiles = nullptr;
    const cuda::SeqDesc* seqs = nullptr;
    int32_t* out_ids = nullptr;  // greedy ids (rows), in the consumed ids buffer; null = logits only
  };

  // Executable graphs of whole steps, by shape: (tokens, rows, splits, greedy).
  using GraphKey = std::tuple<int32_t, int32_t, int32_t, bool>;
  struct Graph {
    cudaGraphExec_t exec = nullptr;
    int64_t last_used = 0;
  };

  // Step scratch for `tokens` tokens (and as many entries and logit rows).
  struct Scratch {
    int32_t tokens = 0;
    DevicePtr x;        // (tokens, dim) fp32 residual stream
    DevicePtr xb;       // (tokens, max(dim, q_dim, hidden)) storage dtype: GEMM inputs
    DevicePtr wide;     // (tokens, max(qkv_dim, 2 * hidden, vocab)) fp32: qkv | gate,up | logits
    DevicePtr partial;  // attention split-K scratch
    int64_t partial_floats = 0;
    DevicePtr meta;     // device copy of `host_meta`
    PinnedPtr host_meta;  // MetaLayout(T)
    PinnedPtr host_out;   // (T, vocab) fp32 logits or (T) ids coming back
  };

  ModelConfig config;
  CudaBackendConfig options;
  DType dtype = DType::kF16;
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  DevicePtr cublas_workspace;
  int32_t num_sms = 1;
  std::string device_name;
  cuda::DeviceWeights weights;
  DevicePtr pool_base;
  std::optional<cuda::KvPool> pool;
  std::vector<std::optional<Cache>> caches;  // by CacheId
  DevicePtr rope_cos, rope_sin;              // (rope_positions, head_dim / 2) fp32
  DevicePtr alibi_slopes;                    // (n_heads) fp32 for ALiBi models; null with RoPE
  int32_t rope_positions = 0;
  Scratch scratch;
  std::map<GraphKey, Graph> graphs;
  std::map<GraphKey, int32_t> sightings;  // steps seen per shape: a shape is captured on its second
  CudaBackend::Stats stats;
  cudaEvent_t step_start = nullptr, step_stop = nullptr;
  float last_step_ms = 0.0f;

  ~Impl() {
    if (stream) CUDA_CHECK(cudaStreamSynchronize(stream));
    ClearGraphs();
    if (step_start) cudaEventDestroy(step_start);
    if (step_stop) cudaEventDestroy(step_stop);
    if (cublas) cublasDestroy(cublas);
    if (stream) cudaStreamDestroy(stream);
  }

  absl::Status Init(const CudaBackendConfig& cfg) {
    options = cfg;
    ASSIGN_OR_RETURN(dtype, ParseDType(cfg.dtype));
    if (config.head_dim % 2 != 0 || config.head_dim > cuda::kMaxAttentionHeadDim) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "the CUDA backend needs an even head_dim <= %d, got %d", cuda::kMaxAttentionHeadDim, config.head_dim));
    }
    if (!CudaDevicePresent()) return absl::FailedPreconditionError("no CUDA device is visible");
    int device = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    num_sms = prop.multiProcessorCount;
    device_name = prop.name;
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreate(&step_start));
    CUDA_CHECK(cudaEventCreate(&step_stop));
    CUBLAS_CHECK(cublasCreate(&cublas));
    CUBLAS_CHECK(cublasSetStream(cublas, stream));
    // A fixed workspace keeps cuBLAS from allocating inside a step (and makes
    // the step capturable into a CUDA graph).
    cublas_workspace = cuda::TryDeviceAlloc(kCublasWorkspaceBytes);
    if (!cublas_workspace) return absl::ResourceExhaustedError("no GPU memory for the cuBLAS workspace");
    CUBLAS_CHECK(cublasSetWorkspace(cublas, cublas_workspace.get(), kCublasWorkspaceBytes));
    CUBLAS_CHECK(cublasSetMathMode(cublas, CUBLAS_DEFAULT_MATH));
    if (config.alibi()) {
      const std::vector<float> slopes = config.AlibiSlopes();
      alibi_slopes = cuda::TryDeviceAlloc(slopes.size() * sizeof(float));
      if (!alibi_slopes) return absl::ResourceExhaustedError("no GPU memory for the ALiBi slopes");
      CUDA_CHECK(cudaMemcpy(alibi_slopes.get(), slopes.data(), slopes.size() * sizeof(float), cudaMemcpyHostToDevice));
    }
    return absl::OkStatus();
  }

  // After the weights: reserve step scratch, then the KV pool from what is left.
  absl::Status Reserve() {
    RETURN_IF_ERROR(EnsureScratch(std::max(cfg_tokens(), 1)));
    size_t free_bytes = 0, total_bytes = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    int64_t budget = options.gpu_memory_gib > 0
                         ? static_cast<int64_t>(options.gpu_memory_gib * double(int64_t{1} << 30))
                         : static_cast<int64_t>(options.gpu_memory_fraction * static_cast<double>(free_bytes));
    if (budget <= 0 || budget > static_cast<int64_t>(free_bytes)) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "KV pool budget of %.2f GiB does not fit the %.2f GiB free after weights (%.2f GiB) and scratch", GiB(budget),
          GiB(free_bytes), GiB(weights.bytes)));
    }
    pool_base = cuda::TryDeviceAlloc(budget);
    if (!pool_base) return absl::ResourceExhaustedError(absl::StrFormat("cannot allocate a %.2f GiB KV pool", GiB(budget)));
    pool.emplace(budget);
    return absl::OkStatus();
  }
  int32_t cfg_tokens() const { return std::min(options.max_step_tokens, kMaxStepTokens); }

  // Captured graphs hold the scratch and RoPE table pointers: drop them
  // before either is reallocated.
  void ClearGraphs() {
    if (stream) CUDA_CHECK(cudaStreamSynchronize(stream));
    for (auto& [key, graph] : graphs) CUDA_CHECK(cudaGraphExecDestroy(graph.exec));
    graphs.clear();
  }

  // Grows the step scratch to `tokens` before anything is launched; a failure
  // is RESOURCE_EXHAUSTED and leaves the old scratch in place.
  absl::Status EnsureScratch(int32_t tokens) {
    if (tokens <= scratch.tokens) return absl::OkStatus();
    const ModelConfig& c = config;
    const int64_t T = tokens;
    const int64_t in_width = std::max({c.dim, c.q_dim(), c.hidden_dim});
    const int64_t wide_width = std::max<int64_t>({c.q_dim() + 2 * int64_t{c.kv_dim()}, 2 * int64_t{c.hidden_dim},
                                                  c.vocab_size});
    // Split-K scratch for steps up to 64 tokens with up to 64 splits; bigger
    // steps fill the GPU without splitting.
    const int64_t partial = cuda::AttentionPartialFloats(std::min<int32_t>(tokens, 64), c.n_heads, c.head_dim, 64);
    ClearGraphs();
    Scratch s;
    s.tokens = tokens;
    s.x = cuda::TryDeviceAlloc(T * c.dim * sizeof(float));
    s.xb = cuda::TryDeviceAlloc(T * in_width * cuda::kDTypeBytes);
    s.wide = cuda::TryDeviceAlloc(T * wide_width * sizeof(float));
    s.partial = cuda::TryDeviceAlloc(partial * sizeof(float));
    s.partial_floats = partial;
    s.meta = cuda::TryDeviceAlloc(MetaLayout(tokens).bytes);
    s.host_meta = cuda::TryPinnedAlloc(MetaLayout(tokens).bytes);
    s.host_out = cuda::TryPinnedAlloc(T * c.vocab_size * sizeof(float));
    if (!s.x || !s.xb || !s.wide || !s.partial || !s.meta || !s.host_meta || !s.host_out) {
      return absl::ResourceExhaustedError(
          absl::StrFormat("no GPU memory for a step of %d tokens (scratch holds %d)", tokens, scratch.tokens));
    }
    scratch = std::move(s);
    return absl::OkStatus();
  }

  // The RoPE table covers positions [0, positions); built in double from the
  // integer position, as cpu::RopeTable::Build does, so both backends use
  // the same fp32 cos/sin values.
  absl::Status EnsureRope(int32_t positions) {
    if (positions <= rope_positions) return absl::OkStatus();
    const int32_t half = config.head_dim / 2;
    std::vector<float> cos_host(static_cast<size_t>(positions) * half), sin_host(cos_host.size());
    for (int32_t p = 0; p < positions; ++p) {
      for (int32_t i = 0; i < half; ++i) {
        const double freq = std::pow(static_cast<double>(config.rope_theta), -2.0 * i / config.head_dim);
        const double angle = static_cast<double>(p) * freq;
        cos_host[static_cast<size_t>(p) * half + i] = static_cast<float>(std::cos(angle));
        sin_host[static_cast<size_t>(p) * half + i] = static_cast<float>(std::sin(angle));
      }
    }
    DevicePtr c = cuda::TryDeviceAlloc(cos_host.size() * sizeof(float));
    DevicePtr s = cuda::TryDeviceAlloc(sin_host.size() * sizeof(float));
    if (!c || !s) return absl::ResourceExhaustedError("no GPU memory for the RoPE table");
    ClearGraphs();
    CUDA_CHECK(cudaMemcpy(c.get(), cos_host.data(), cos_host.size() * sizeof(float), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(s.get(), sin_host.data(), sin_host.size() * sizeof(float), cudaMemcpyHostToDevice));
    rope_cos = std::move(c);
    rope_sin = std::move(s);
    rope_positions = positions;
    return absl::OkStatus();
  }

  int64_t CacheBytes(const CacheGeometry& g) const {
    return int64_t{config.n_layers} * cuda::LayerElements(g, config.n_kv_heads, config.head_dim) * cuda::kDTypeBytes;
  }

  const CacheState* Lookup(CacheId id) const {
    if (id < 0 || static_cast<size_t>(id) >= caches.size() || !caches[id]) return nullptr;
    return &caches[id]->state;
  }

  // Rows of the RoPE table a cache of this geometry needs (both attention kernels).
  int32_t RopePositionsFor(const CacheGeometry& g) const {
    return cuda::PrefillRopePositions(g, cuda::PrefillQueriesPerTile(config.n_heads, config.n_kv_heads));
  }

  absl::Status Run(const Batch& batch, std::vector<float>* logits, std::vector<int32_t>* ids);
  // Enqueues the whole step on `stream`: no host synchronisation, no allocation.
  void Enqueue(const StepView& v);
  void RunLayer(int32_t layer, const StepView& v);
  // The graph for this step's shape, captured now if the shape is seen for
  // the second time; null (run it eagerly) the first time, so shapes that
  // never repeat never pay for a capture.
  cudaGraphExec_t GraphFor(const StepView& v);
};

void CudaBackend::Impl::RunLayer(int32_t layer, const StepView& v) {
  const ModelConfig& c = config;
  const int32_t T = v.tokens;
  const cuda::DeviceLayer& w = weights.layers[layer];
  const int32_t qkv_dim = c.q_dim() + 2 * c.kv_dim();
  float* x = cuda::As<float>(scratch.x);
  void* xb = scratch.xb.get();
  float* wide = cuda::As<float>(scratch.wide);
  const bool layer_norm = c.norm == NormKind::kLayer;
  const float* slopes = cuda::As<float>(alibi_slopes);

  cuda::LaunchRmsNorm({.dtype = dtype, .x = x, .weight = cuda::As<float>(w.attn_norm), .rows = nullptr, .out = xb,
                       .n_rows = T, .dim = c.dim, .eps = c.norm_eps, .layer_norm = layer_norm,
                       .bias = cuda::As<float>(w.attn_norm_bias)},
                      stream);
  // wide = (T, qkv_dim): q | k | v, fp32.
  cuda::Gemm(cublas, {.dtype = dtype, .w = w.wqkv.get(), .in = xb, .out = wide, .tokens = T, .n = qkv_dim, .k = c.dim});
  cuda::LaunchKvAppend({.dtype = dtype, .qkv = wide, .qkv_stride = qkv_dim, .k_offset = c.q_dim(),
                        .pool = pool_base.get(), .seqs = v.seqs, .token_seq = v.token_seq, .tokens = T,
                        .n_kv_heads = c.n_kv_heads, .head_dim = c.head_dim, .layer = layer},
                       stream);
  // xb = (T, q_dim) attention output in the storage dtype: decode tokens and
  // prefill tiles write disjoint rows.
  cuda::LaunchAttention({.dtype = dtype, .qkv = wide, .qkv_stride = qkv_dim, .pool = pool_base.get(), .seqs = v.seqs,
                         .token_seq = v.token_seq, .token_list = v.decode_tokens,
                         .rope_cos = cuda::As<float>(rope_cos), .rope_sin = cuda::As<float>(rope_sin),
                         .rope_positions = rope_positions, .alibi_slopes = slopes, .out = xb,
                         .partial = cuda::As<float>(scratch.partial),
                         .partial_floats = scratch.partial_floats, .tokens = v.n_decode, .n_heads = c.n_heads,
                         .n_kv_heads = c.n_kv_heads, .head_dim = c.head_dim, .layer = layer, .splits = v.splits},
                        stream);
  cuda::LaunchPrefillAttention({.dtype = dtype, .qkv = wide, .qkv_stride = qkv_dim, .pool = pool_base.get(),
                                .seqs = v.seqs, .tiles = v.tiles, .n_tiles = v.n_tiles,
                                .rope_cos = cuda::As<float>(rope_cos), .rope_sin = cuda::As<float>(rope_sin),
                                .rope_positions = rope_positions, .alibi_slopes = slopes, .out = xb,
                                .n_heads = c.n_heads,
                                .n_kv_heads = c.n_kv_heads, .head_dim = c.head_dim, .layer = layer},
                               stream);
  // x += wo . att (the residual add rides in the GEMM epilogue).
  cuda::Gemm(cublas, {.dtype = dtype, .w = w.wo.get(), .in = xb, .out = x, .tokens = T, .n = c.dim, .k = c.q_dim(),
                      .beta = 1.0f});
  cuda::LaunchRmsNorm({.dtype = dtype, .x = x, .weight = cuda::As<float>(w.ffn_norm), .rows = nullptr, .out = xb,
                       .n_rows = T, .dim = c.dim, .eps = c.norm_eps, .layer_norm = layer_norm,
                       .bias = cuda::As<float>(w.ffn_norm_bias)},
                      stream);
  if (c.ffn == FfnKind::kGelu) {
    // wide = (T, hidden): up; xb = gelu(up).
    cuda::Gemm(cublas, {.dtype = dtype, .w = w.w13.get(), .in = xb, .out = wide, .tokens = T, .n = c.hidden_dim,
                        .k = c.dim});
    cuda::LaunchGelu({.dtype = dtype, .up = wide, .out = xb, .tokens = T, .hidden = c.hidden_dim}, stream);
  } else {
    // wide = (T, 2 * hidden): gate | up; xb = silu(gate) * up.
    cuda::Gemm(cublas, {.dtype = dtype, .w = w.w13.get(), .in = xb, .out = wide, .tokens = T, .n = 2 * c.hidden_dim,
                        .k = c.dim});
    cuda::LaunchSwiGlu({.dtype = dtype, .gate_up = wide, .out = xb, .tokens = T, .hidden = c.hidden_dim}, stream);
  }
  // x += w2 . xb.
  cuda::Gemm(cublas, {.dtype = dtype, .w = w.w2.get(), .in = xb, .out = x, .tokens = T, .n = c.dim,
                      .k = c.hidden_dim, .beta = 1.0f});
}

void CudaBackend::Impl::Enqueue(const StepView& v) {
  const ModelConfig& c = config;
  float* x = cuda::As<float>(scratch.x);
  cuda::LaunchEmbedding(
      {.dtype = dtype, .table = weights.embedding.get(), .ids = v.ids, .out = x, .tokens = v.tokens, .dim = c.dim},
      stream);
  for (int32_t layer = 0; layer < c.n_layers; ++layer) RunLayer(layer, v);

  // Final norm of the rows that want logits, then the classifier: (rows, vocab) fp32.
  float* d_logits = cuda::As<float>(scratch.wide);
  cuda::LaunchRmsNorm({.dtype = dtype, .x = x, .weight = cuda::As<float>(weights.final_norm), .rows = v.rows_index,
                       .out = scratch.xb.get(), .n_rows = v.rows, .dim = c.dim, .eps = c.norm_eps,
                       .layer_norm = c.norm == NormKind::kLayer, .bias = cuda::As<float>(weights.final_norm_bias)},
                      stream);
  cuda::Gemm(cublas, {.dtype = dtype, .w = weights.Classifier(), .in = scratch.xb.get(), .out = d_logits,
                      .tokens = v.rows, .n = c.vocab_size, .k = c.dim});
  if (v.out_ids) cuda::LaunchArgmax({.logits = d_logits, .ids = v.out_ids, .rows = v.rows, .vocab = c.vocab_size}, stream);
}

cudaGraphExec_t CudaBackend::Impl::GraphFor(const StepView& v) {
  const GraphKey key{v.tokens, v.rows, v.splits, v.out_ids != nullptr};
  if (auto it = graphs.find(key); it != graphs.end()) {
    it->second.last_used = stats.steps;
    return it->second.exec;
  }
  if (sightings.size() >= kMaxSightings) sightings.clear();
  if (++sightings[key] < 2) return nullptr;
  if (graphs.size() >= kMaxGraphs) {
    auto oldest = std::min_element(graphs.begin(), graphs.end(), [](const auto& a, const auto& b) {
      return a.second.last_used < b.second.last_used;
    });
    CUDA_CHECK(cudaGraphExecDestroy(oldest->second.exec));
    graphs.erase(oldest);
  }
  // Capture records the step's launches without running them.
  cudaGraph_t graph = nullptr;
  CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  Enqueue(v);
  CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  Graph entry{.exec = nullptr, .last_used = stats.steps};
  CUDA_CHECK(cudaGraphInstantiate(&entry.exec, graph, 0));
  CUDA_CHECK(cudaGraphDestroy(graph));
  graphs.emplace(key, entry);
  ++stats.graph_captures;
  return entry.exec;
}

absl::Status CudaBackend::Impl::Run(const Batch& batch, std::vector<float>* logits, std::vector<int32_t>* ids) {
  RETURN_IF_ERROR(ValidateBatch(batch, config.vocab_size, [this](CacheId id) { return Lookup(id); }));
  const ModelConfig& c = config;
  const int32_t T = static_cast<int32_t>(batch.tokens.size());
  const int32_t rows = batch.LogitRows();
  const int32_t n_seqs = static_cast<int32_t>(batch.seqs.size());
  if (T == 0) {
    if (logits) logits->clear();
    if (ids) ids->clear();
    return absl::OkStatus();
  }
  if (T > kMaxStepTokens) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("a CUDA step takes at most %d tokens, got %d", kMaxStepTokens, T));
  }
  RETURN_IF_ERROR(EnsureScratch(T));  // n_seqs <= T, rows <= T, tiles <= T

  // Fill the step's metadata in pinned memory (layout: MetaLayout).
  const MetaLayout layout(T);
  char* host = static_cast<char*>(scratch.host_meta.get());
  auto* h_ids = reinterpret_cast<int32_t*>(host + layout.ids);
  auto* h_token_seq = reinterpret_cast<int32_t*>(host + layout.token_seq);
  auto* h_rows = reinterpret_cast<int32_t*>(host + layout.rows);
  auto* h_seqs = reinterpret_cast<cuda::SeqDesc*>(host + layout.seqs);
  std::memcpy(h_ids, batch.tokens.data(), T * sizeof(int32_t));
  int32_t max_keys = 1, row = 0;
  for (int32_t e = 0; e < n_seqs; ++e) {
    const SeqEntry& s = batch.seqs[e];
    const Cache& cache = *caches[s.cache];
    std::fill_n(h_token_seq + s.token_begin, s.n_tokens, e);
    for (int32_t i = s.all_logits ? 0 : s.n_tokens - 1; i < s.n_tokens; ++i) h_rows[row++] = s.token_begin + i;
    h_seqs[e] = {.cache_offset = cache.pool_offset / cuda::kDTypeBytes,
                 .n_past = s.n_past,
                 .geometry = cache.state.geometry,
                 .token_begin = s.token_begin,
                 .n_tokens = s.n_tokens};
    max_keys = std::max(max_keys, cache.state.geometry.MaxPositions());
  }
  const cuda::AttentionPlan plan =
      cuda::PlanAttention(absl::MakeConstSpan(h_seqs, n_seqs), std::max(options.prefill_min_tokens, 1),
                          cuda::PrefillQueriesPerTile(c.n_heads, c.n_kv_heads));
  const bool all_decode = plan.AllDecode(T);
  std::copy(plan.decode_tokens.begin(), plan.decode_tokens.end(), reinterpret_cast<int32_t*>(host + layout.decode));
  std::copy(plan.tiles.begin(), plan.tiles.end(), reinterpret_cast<cuda::PrefillTile*>(host + layout.tiles));

  StepView v;
  v.tokens = T;
  v.rows = rows;
  v.n_decode = static_cast<int32_t>(plan.decode_tokens.size());
  v.n_tiles = static_cast<int32_t>(plan.tiles.size());
  v.splits = options.attention_splits > 0 ? options.attention_splits
                                          : cuda::AttentionSplits(v.n_decode, c.n_heads, c.n_kv_heads, c.head_dim,
                                                                  max_keys, num_sms, scratch.partial_floats);
  if (cuda::AttentionPartialFloats(v.n_decode, c.n_heads, c.head_dim, v.splits) > scratch.partial_floats) {
    return absl::InvalidArgumentError(absl::StrFormat("attention_splits=%d does not fit the split-K scratch", v.splits));
  }
  char* dev = static_cast<char*>(scratch.meta.get());
  v.ids = reinterpret_cast<const int32_t*>(dev + layout.ids);
  v.token_seq = reinterpret_cast<const int32_t*>(dev + layout.token_seq);
  v.rows_index = reinterpret_cast<const int32_t*>(dev + layout.rows);
  v.decode_tokens = all_decode ? nullptr : reinterpret_cast<const int32_t*>(dev + layout.decode);
  v.tiles = reinterpret_cast<const cuda::PrefillTile*>(dev + layout.tiles);
  v.seqs = reinterpret_cast<const cuda::SeqDesc*>(dev + layout.seqs);
  // Greedy ids reuse the step's ids buffer, consumed by the embedding by then.
  v.out_ids = ids ? reinterpret_cast<int32_t*>(dev + layout.ids) : nullptr;

  // A step whose launches depend only on its shape replays a captured graph
  // (captured here, before the step's clock starts).
  const cudaGraphExec_t graph = options.cuda_graphs && all_decode && T <= kMaxGraphTokens ? GraphFor(v) : nullptr;
  CUDA_CHECK(cudaEventRecord(step_start, stream));
  CUDA_CHECK(cudaMemcpyAsync(dev, host, layout.seqs + n_seqs * sizeof(cuda::SeqDesc), cudaMemcpyHostToDevice, stream));
  if (graph) {
    CUDA_CHECK(cudaGraphLaunch(graph, stream));
    ++stats.graph_launches;
  } else {
    Enqueue(v);
  }
  ++stats.steps;

  if (ids) {
    CUDA_CHECK(cudaMemcpyAsync(scratch.host_out.get(), v.out_ids, rows * sizeof(int32_t), cudaMemcpyDeviceToHost,
                               stream));
    CUDA_CHECK(cudaEventRecord(step_stop, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    const auto* out = static_cast<const int32_t*>(scratch.host_out.get());
    ids->assign(out, out + rows);
  } else {
    const int64_t n = int64_t{rows} * c.vocab_size;
    CUDA_CHECK(cudaMemcpyAsync(scratch.host_out.get(), scratch.wide.get(), n * sizeof(float), cudaMemcpyDeviceToHost,
                               stream));
    CUDA_CHECK(cudaEventRecord(step_stop, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    const auto* out = static_cast<const float*>(scratch.host_out.get());
    logits->assign(out, out + n);
  }
  CUDA_CHECK(cudaEventElapsedTime(&last_step_ms, step_start, step_stop));
  for (const SeqEntry& s : batch.seqs) caches[s.cache]->state.consumed += s.n_tokens;
  return absl::OkStatus();
}

// ---- CudaBackend ----

CudaBackend::CudaBackend(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaBackend::~CudaBackend() = default;

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(Model model, const CudaBackendConfig& config) {
  RETURN_IF_ERROR(model.config.Validate());
  RETURN_IF_ERROR(model.ValidateWeights());
  auto impl = std::make_unique<Impl>();
  impl->config = model.config;
  RETURN_IF_ERROR(impl->Init(config));
  ASSIGN_OR_RETURN(impl->weights, cuda::UploadWeights(model, impl->dtype, impl->stream));
  model.weights = ModelWeights();  // the device copy is the only one now
  RETURN_IF_ERROR(impl->Reserve());
  return std::unique_ptr<CudaBackend>(new CudaBackend(std::move(impl)));
}

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::CreateRandom(const ModelConfig& model,
                                                                       const CudaBackendConfig& config, uint64_t seed,
                                                                       float scale) {
  RETURN_IF_ERROR(model.Validate());
  auto impl = std::make_unique<Impl>();
  impl->config = model;
  RETURN_IF_ERROR(impl->Init(config));
  ASSIGN_OR_RETURN(impl->weights, cuda::RandomWeights(model, impl->dtype, seed, scale, impl->stream));
  RETURN_IF_ERROR(impl->Reserve());
  return std::unique_ptr<CudaBackend>(new CudaBackend(std::move(impl)));
}

const ModelConfig& CudaBackend::config() const { return impl_->config; }

absl::StatusOr<CacheId> CudaBackend::CreateCache(const CacheGeometry& geometry) {
  if (geometry.sinks < 0 || geometry.window < 1 || geometry.ring < geometry.window) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "invalid cache geometry: sinks=%d window=%d ring=%d", geometry.sinks, geometry.window, geometry.ring));
  }
  Impl& m = *impl_;
  const int64_t bytes = m.CacheBytes(geometry);
  RETURN_IF_ERROR(m.EnsureRope(m.RopePositionsFor(geometry)));
  std::optional<int64_t> offset = m.pool->Allocate(bytes);
  if (!offset) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "GPU KV pool is full: a cache of %d slots needs %.1f MiB; %.1f of %.1f MiB in use, largest free range %.1f MiB",
        geometry.Slots(), bytes / 1048576.0, m.pool->used() / 1048576.0, m.pool->capacity() / 1048576.0,
        m.pool->LargestFree() / 1048576.0));
  }
  Impl::Cache cache{.state = {.geometry = geometry, .consumed = 0}, .pool_offset = *offset};
  for (size_t i = 0; i < m.caches.size(); ++i) {
    if (!m.caches[i]) {
      m.caches[i] = cache;
      return static_cast<CacheId>(i);
    }
  }
  m.caches.push_back(cache);
  return static_cast<CacheId>(m.caches.size() - 1);
}

void CudaBackend::DestroyCache(CacheId id) {
  Impl& m = *impl_;
  if (id < 0 || static_cast<size_t>(id) >= m.caches.size() || !m.caches[id]) return;
  m.pool->Free(m.caches[id]->pool_offset);
  m.caches[id].reset();
}

absl::Status CudaBackend::ResetCache(CacheId id) {
  Impl& m = *impl_;
  if (id < 0 || static_cast<size_t>(id) >= m.caches.size() || !m.caches[id]) {
    return absl::NotFoundError(absl::StrFormat("no cache with id %d", id));
  }
  // Stale keys need no clearing: a query only ever reads keys appended since.
  m.caches[id]->state.consumed = 0;
  return absl::OkStatus();
}

std::string CudaBackend::KvLayout() const {
  // (n_layers, K|V, n_kv_heads, slots, head_dim), keys un-rotated (step_desc.h).
  return absl::StrCat("cuda:", impl_->dtype == cuda::DType::kF16 ? "f16" : "bf16", ":layer-kv-head-slot-dim:keys-unrotated:v1");
}

namespace {

// The part of a cache that `consumed` tokens wrote, as a 2-D copy: one row per
// (layer, K|V, kv head), each the first `used` slots of that row.
struct CacheRows {
  int64_t rows, row_pitch, used_bytes;
};

CacheRows RowsOf(const ModelConfig& c, const CacheGeometry& g, int64_t consumed) {
  const int64_t used = std::min<int64_t>(consumed, g.Slots());
  return {2 * int64_t{c.n_layers} * c.n_kv_heads, int64_t{g.Slots()} * c.head_dim * cuda::kDTypeBytes,
          used * c.head_dim * cuda::kDTypeBytes};
}

}  // namespace

absl::StatusOr<std::string> CudaBackend::ExportCache(CacheId id) const {
  const Impl& m = *impl_;
  if (id < 0 || static_cast<size_t>(id) >= m.caches.size() || !m.caches[id]) {
    return absl::NotFoundError(absl::StrFormat("no cache with id %d", id));
  }
  const CacheState& state = m.caches[id]->state;
  return ExportCacheSlots(id, 0, static_cast<int32_t>(RowsOf(m.config, state.geometry, state.consumed).used_bytes /
                                                      ExportShape().slot_bytes));
}

Backend::KvShape CudaBackend::ExportShape() const {
  const ModelConfig& c = impl_->config;
  return {2 * int64_t{c.n_layers} * c.n_kv_heads, int64_t{c.head_dim} * cuda::kDTypeBytes};
}

absl::StatusOr<std::string> CudaBackend::ExportCacheSlots(CacheId id, int32_t first, int32_t count) const {
  const Impl& m = *impl_;
  if (id < 0 || static_cast<size_t>(id) >= m.caches.size() || !m.caches[id]) {
    return absl::NotFoundError(absl::StrFormat("no cache with id %d", id));
  }
  const Impl::Cache& cache = *m.caches[id];
  const CacheRows r = RowsOf(m.config, cache.state.geometry, cache.state.consumed);
  const int64_t slot_bytes = ExportShape().slot_bytes;
  const int64_t used = r.used_bytes / slot_bytes;
  if (first < 0 || count < 0 || first + int64_t{count} > used) {
    return absl::InvalidArgumentError(
        absl::StrFormat("slots %d..%d are not all in use (%d are)", first, first + int64_t{count}, used));
  }
  const int64_t width = count * slot_bytes;
  std::string out(static_cast<size_t>(r.rows * width), '\0');
  if (width == 0) return out;
  CUDA_CHECK(cudaStreamSynchronize(m.stream));
  CUDA_CHECK(cudaMemcpy2D(out.data(), width,
                          static_cast<const char*>(m.pool_base.get()) + cache.pool_offset + first * slot_bytes,
                          r.row_pitch, width, r.rows, cudaMemcpyDeviceToHost));
  return out;
}

absl::Status CudaBackend::ImportCache(CacheId id, int64_t consumed, std::string_view bytes) {
  Impl& m = *impl_;
  if (id < 0 || static_cast<size_t>(id) >= m.caches.size() || !m.caches[id]) {
    return absl::NotFoundError(absl::StrFormat("no cache with id %d", id));
  }
  if (consumed < 0) return absl::InvalidArgumentError("a cache cannot have consumed a negative number of tokens");
  Impl::Cache& cache = *m.caches[id];
  const CacheRows r = RowsOf(m.config, cache.state.geometry, consumed);
  if (static_cast<int64_t>(bytes.size()) != r.rows * r.used_bytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the stored cache has %d bytes; this model's cache needs %d", bytes.size(), r.rows * r.used_bytes));
  }
  if (r.used_bytes > 0) {
    CUDA_CHECK(cudaStreamSynchronize(m.stream));
    CUDA_CHECK(cudaMemcpy2D(static_cast<char*>(m.pool_base.get()) + cache.pool_offset, r.row_pitch, bytes.data(),
                            r.used_bytes, r.used_bytes, r.rows, cudaMemcpyHostToDevice));
  }
  cache.state.consumed = consumed;
  return absl::OkStatus();
}

namespace {

absl::Status RefuseContrastive(const Batch& batch, bool hidden) {
  const bool candidates = std::any_of(batch.seqs.begin(), batch.seqs.end(), [](const SeqEntry& s) { return s.candidates; });
  if (hidden || candidates) {
    return absl::UnimplementedError("the CUDA backend does not run contrastive search yet; use --backend cpu");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CudaBackend::Forward(const Batch& batch, std::vector<float>* logits, std::vector<float>* hidden) {
  RETURN_IF_ERROR(RefuseContrastive(batch, hidden != nullptr));
  return impl_->Run(batch, logits, nullptr);
}

absl::Status CudaBackend::ForwardGreedy(const Batch& batch, std::vector<int32_t>* ids) {
  RETURN_IF_ERROR(RefuseContrastive(batch, false));
  return impl_->Run(batch, nullptr, ids);
}

int64_t CudaBackend::CacheBytes(const CacheGeometry& geometry) const { return impl_->CacheBytes(geometry); }
int64_t CudaBackend::PoolBytes() const { return impl_->pool->capacity(); }
int64_t CudaBackend::PoolUsedBytes() const { return impl_->pool->used(); }
int64_t CudaBackend::WeightBytes() const { return impl_->weights.bytes; }
std::string CudaBackend::DeviceName() const { return impl_->device_name; }
float CudaBackend::LastStepDeviceMs() const { return impl_->last_step_ms; }
CudaBackend::Stats CudaBackend::stats() const { return impl_->stats; }

absl::Status CudaBackend::SkipTokensForBenchmark(CacheId id, int64_t n) {
  Impl& m = *impl_;
  if (id < 0 || static_cast<size_t>(id) >= m.caches.size() || !m.caches[id] || n < 0) {
    return absl::InvalidArgumentError(absl::StrFormat("cannot skip %d tokens of cache %d", n, id));
  }
  m.caches[id]->state.consumed += n;
  return absl::OkStatus();
}

void CudaBackend::SetStepPathForBenchmark(bool cuda_graphs, int32_t prefill_min_tokens) {
  impl_->options.cuda_graphs = cuda_graphs;
  impl_->options.prefill_min_tokens = std::max(prefill_min_tokens, 1);
}

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(Model model, const BackendOptions& options) {
  CudaBackendConfig config;
  config.dtype = options.dtype;
  config.gpu_memory_gib = options.gpu_memory_gib;
  config.gpu_memory_fraction = options.gpu_memory_fraction;
  ASSIGN_OR_RETURN(auto backend, CudaBackend::Create(std::move(model), config));
  return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace sinkserve

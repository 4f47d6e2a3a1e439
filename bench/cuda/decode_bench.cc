// sinkserve-cuda-decode-bench: decode throughput of the CUDA backend on
// synthetic Llama-2-7B- and Mistral-7B-shaped fp16 models whose random
// weights are generated on the device (no download, no host copy).
//
// Sections, per model:
//   batch1     ms/token against the roofline (weight + KV bytes) / copy bandwidth
//   sampling   greedy on the device (ids back) vs logits copied back + host Sampler
//   graphs     decode steps replayed as CUDA graphs vs launched one by one
//   prefill    time to first token for a 2,000-token prompt: tiled prefill
//              attention vs the decode kernel, and the GEMM rate it implies
//   batch      batches 1..256 x W 1024/4096: tokens/s and fraction of roofline
//   flat       per-token time at 10K (real prefill), 100K and 1M tokens
//   recompute  StreamingLLM vs sliding window with re-computation at cache 4096
//
// Caches for the batch and flat sections are fast-forwarded with
// CudaBackend::SkipTokensForBenchmark: a step's cost depends on how many keys
// each query sees, never on their values, so a full window of synthetic keys
// costs the same as a real one. Every line says when it was fast-forwarded.
// Times are medians over timed steps after warm-up; "dev" is CUDA-event time
// of the step on the device, "wall" includes host work and the copy-back.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "engine/sampler.h"
#include "engine/sequence.h"
#include "engine/status_macros.h"
#include "bench/cuda/bench_util.h"
#include "kernels/cuda/cuda_backend.h"

namespace sinkserve {
namespace {

struct Shape {
  const char* name;
  int32_t dim, hidden, layers, heads, kv_heads, vocab;
};
constexpr Shape kLlama2_7B{"llama2-7b", 4096, 11008, 32, 32, 32, 32000};
constexpr Shape kMistral_7B{"mistral-7b", 4096, 14336, 32, 32, 8, 32000};

ModelConfig ConfigOf(const Shape& s) {
  ModelConfig c;
  c.name = s.name;
  c.dim = s.dim;
  c.hidden_dim = s.hidden;
  c.n_layers = s.layers;
  c.n_heads = s.heads;
  c.n_kv_heads = s.kv_heads;
  c.head_dim = s.dim / s.heads;
  c.vocab_size = s.vocab;
  c.max_seq_len = 4096;
  return c;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

double NowMs() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct StepTimes {
  double dev_ms = 0, wall_ms = 0;
};

// Runs `warmup` then `steps` decode steps, one token per cache, greedy on the
// device (or logits back + host Sampler when `host_sampling`).
absl::StatusOr<StepTimes> Decode(CudaBackend& b, const std::vector<CacheId>& caches, std::vector<int64_t>& past,
                                 int32_t warmup, int32_t steps, bool host_sampling = false) {
  std::vector<int32_t> tokens(caches.size(), 1);
  std::vector<double> dev, wall;
  std::vector<float> logits;
  std::vector<int32_t> ids;
  SamplingParams sp;  // temperature 0.8, top-k 40, top-p 0.95, min-p 0.05: the engine default
  sp.seed = 1;
  sp.has_seed = true;
  Sampler sampler(sp, b.config().vocab_size);
  for (int32_t i = 0; i < warmup + steps; ++i) {
    Batch batch;
    for (size_t e = 0; e < caches.size(); ++e) batch.Add(caches[e], past[e], {tokens[e]});
    const double t0 = NowMs();
    if (host_sampling) {
      RETURN_IF_ERROR(b.Forward(batch, &logits));
      const int32_t vocab = b.config().vocab_size;
      for (size_t e = 0; e < caches.size(); ++e) {
        tokens[e] = sampler.Sample(absl::MakeSpan(&logits[e * vocab], vocab), {});
      }
    } else {
      RETURN_IF_ERROR(b.ForwardGreedy(batch, &ids));
      for (size_t e = 0; e < caches.size(); ++e) tokens[e] = ids[e];
    }
    const double t1 = NowMs();
    for (int64_t& p : past) ++p;
    if (i >= warmup) {
      dev.push_back(b.LastStepDeviceMs());
      wall.push_back(t1 - t0);
    }
  }
  return StepTimes{Median(dev), Median(wall)};
}

// Bytes one decode step must read: all weights plus every session's visible keys and values.
double StepBytes(const CudaBackend& b, int32_t batch, int32_t keys) {
  const ModelConfig& c = b.config();
  return static_cast<double>(b.WeightBytes()) + static_cast<double>(batch) * keys * 2.0 * c.n_layers * c.kv_dim() * 2.0;
}

struct Bench {
  CudaBackend& b;
  double gbps;  // measured copy bandwidth (read + write)
  const char* model;

  // `n` caches, each fast-forwarded to `age` tokens consumed.
  absl::StatusOr<std::vector<CacheId>> Caches(int32_t n, const CacheGeometry& g, int64_t age = 0) {
    std::vector<CacheId> ids;
    for (int32_t i = 0; i < n; ++i) {
      auto id = b.CreateCache(g);
      absl::Status st = id.ok() ? b.SkipTokensForBenchmark(*id, age) : id.status();
      if (id.ok()) ids.push_back(*id);
      if (!st.ok()) {
        Free(ids);
        return st;
      }
    }
    return ids;
  }
  void Free(const std::vector<CacheId>& ids) {
    for (CacheId x : ids) b.DestroyCache(x);
  }

  // Batch of `n` sessions, each fast-forwarded to a full window.
  absl::Status BatchPoint(int32_t n, int32_t window, const char* section) {
    const CacheGeometry g{.sinks = 4, .window = window, .ring = window};
    std::vector<int64_t> past(n, 3 * int64_t{window} + 7);
    auto caches = Caches(n, g, past[0]);
    if (!caches.ok()) {
      std::printf("%s model=%s batch=%d W=%d skipped: %s\n", section, model, n, window,
                  std::string(caches.status().message()).c_str());
      return absl::OkStatus();
    }
    ASSIGN_OR_RETURN(StepTimes t, Decode(b, *caches, past, 3, 15));
    const double bytes = StepBytes(b, n, g.MaxPositions());
    const double roofline_ms = bytes / (gbps * 1e9) * 1e3;
    std::printf("%s model=%s batch=%d W=%d S=4 dev_ms=%.3f wall_ms=%.3f tok_s=%.1f roofline_ms=%.3f "
                "roofline_fraction=%.3f step_bytes=%.0f fast_forwarded=1\n",
                section, model, n, window, t.dev_ms, t.wall_ms, n / (t.wall_ms * 1e-3), roofline_ms,
                roofline_ms / t.dev_ms, bytes);
    std::fflush(stdout);
    Free(*caches);
    return absl::OkStatus();
  }

  absl::Status Sampling() {
    for (int32_t n : {1, 64}) {
      const CacheGeometry g{.sinks = 4, .window = 1024, .ring = 1024};
      ASSIGN_OR_RETURN(auto caches, Caches(n, g, 2000));
      std::vector<int64_t> past(n, 2000);
      ASSIGN_OR_RETURN(StepTimes dev_greedy, Decode(b, caches, past, 3, 20, false));
      ASSIGN_OR_RETURN(StepTimes host, Decode(b, caches, past, 3, 20, true));
      std::printf("sampling model=%s batch=%d W=1024 device_greedy_wall_ms=%.3f "
                  "logits_back_host_sampler_wall_ms=%.3f (host: temperature 0.8 top-k 40 top-p 0.95 min-p 0.05)\n",
                  model, n, dev_greedy.wall_ms, host.wall_ms);
      std::fflush(stdout);
      Free(caches);
    }
    return absl::OkStatus();
  }

  // Same steps, graphs on then off, interleaved so drift hits both alike.
  absl::Status Graphs() {
    for (int32_t n : {1, 64}) {
      const CacheGeometry g{.sinks = 4, .window = 1024, .ring = 1024};
      ASSIGN_OR_RETURN(auto caches, Caches(n, g, 2000));
      std::vector<int64_t> past(n, 2000);
      std::vector<double> on_wall, off_wall, on_dev, off_dev;
      for (int32_t round = 0; round < 5; ++round) {
        for (bool graphs : {true, false}) {
          b.SetStepPathForBenchmark(graphs, CudaBackendConfig().prefill_min_tokens);
          ASSIGN_OR_RETURN(StepTimes t, Decode(b, caches, past, 2, 10));
          (graphs ? on_wall : off_wall).push_back(t.wall_ms);
          (graphs ? on_dev : off_dev).push_back(t.dev_ms);
        }
      }
      b.SetStepPathForBenchmark(true, CudaBackendConfig().prefill_min_tokens);
      std::printf("graphs model=%s batch=%d W=1024 graph_wall_ms=%.3f eager_wall_ms=%.3f graph_dev_ms=%.3f "
                  "eager_dev_ms=%.3f eager_over_graph=%.3f fast_forwarded=1\n",
                  model, n, Median(on_wall), Median(off_wall), Median(on_dev), Median(off_dev),
                  Median(off_wall) / Median(on_wall));
      std::fflush(stdout);
      Free(caches);
    }
    return absl::OkStatus();
  }

  // A fresh session's 2,000-token prompt in one chunk, greedy id back: the
  // time to first token. Tiled prefill attention against the decode kernel
  // (one query per block), alternating, on fresh caches each time.
  absl::Status Prefill(double layer_params) {
    constexpr int32_t kPrompt = 2000;
    const CacheGeometry g{.sinks = 4, .window = 4092, .ring = 4092 + kPrompt - 1};
    std::vector<int32_t> prompt(kPrompt), ids;
    for (int32_t i = 0; i < kPrompt; ++i) prompt[i] = i * 7919 % b.config().vocab_size;
    std::vector<double> tiled, per_query;
    for (int32_t round = 0; round < 6; ++round) {
      for (bool use_tiles : {true, false}) {
        b.SetStepPathForBenchmark(true, use_tiles ? CudaBackendConfig().prefill_min_tokens : (1 << 30));
        ASSIGN_OR_RETURN(auto caches, Caches(1, g));
        Batch batch;
        batch.Add(caches[0], 0, prompt);
        const double t0 = NowMs();
        RETURN_IF_ERROR(b.ForwardGreedy(batch, &ids));
        if (round > 0) (use_tiles ? tiled : per_query).push_back(NowMs() - t0);
        Free(caches);
      }
    }
    b.SetStepPathForBenchmark(true, CudaBackendConfig().prefill_min_tokens);
    const double ttft = Median(tiled);
    // Layer matmul FLOPs alone (2 per weight per token; the classifier runs
    // on one row), over the whole step's time: a lower bound on the GEMMs' rate.
    std::printf("prefill model=%s prompt=%d ttft_tiled_ms=%.3f ttft_decode_kernel_ms=%.3f "
                "decode_kernel_over_tiled=%.2f matmul_tflops_lower_bound=%.1f\n",
                model, kPrompt, ttft, Median(per_query), Median(per_query) / ttft,
                2.0 * layer_params * kPrompt / (ttft * 1e-3) / 1e12);
    std::fflush(stdout);
    return absl::OkStatus();
  }

  absl::Status Flat() {
    constexpr int32_t kChunk = 512;
    const CacheGeometry g{.sinks = 4, .window = 4092, .ring = 4092 + kChunk - 1};
    ASSIGN_OR_RETURN(auto caches, Caches(1, g));
    std::vector<int64_t> past = {0};
    // Real prefill of the first 10K tokens, in chunks.
    std::vector<int32_t> chunk(kChunk);
    std::vector<int32_t> ids;
    const double t0 = NowMs();
    while (past[0] < 10000) {
      const int32_t n = static_cast<int32_t>(std::min<int64_t>(kChunk, 10000 - past[0]));
      for (int32_t i = 0; i < n; ++i) chunk[i] = static_cast<int32_t>((past[0] + i) * 7919 % b.config().vocab_size);
      Batch batch;
      batch.Add(caches[0], past[0], absl::MakeConstSpan(chunk.data(), n));
      RETURN_IF_ERROR(b.ForwardGreedy(batch, &ids));
      past[0] += n;
    }
    std::printf("prefill model=%s tokens=10000 chunk=%d wall_s=%.3f tok_s=%.1f\n", model, kChunk,
                (NowMs() - t0) * 1e-3, 10000 / ((NowMs() - t0) * 1e-3));
    for (int64_t at : {int64_t{10000}, int64_t{100000}, int64_t{1000000}}) {
      const bool skipped = at > past[0];
      if (skipped) RETURN_IF_ERROR(b.SkipTokensForBenchmark(caches[0], at - past[0]));
      past[0] = at;
      ASSIGN_OR_RETURN(StepTimes t, Decode(b, caches, past, 3, 30));
      std::printf("flat model=%s tokens=%lld S=4 W=4092 dev_ms=%.3f wall_ms=%.3f fast_forwarded=%d\n", model,
                  static_cast<long long>(at), t.dev_ms, t.wall_ms, skipped ? 1 : 0);
      std::fflush(stdout);
    }
    Free(caches);
    return absl::OkStatus();
  }

  // Cache 4096: StreamingLLM S=4 + W=4092 decode vs re-running the last 4096
  // tokens for every new token (Sequence's kRecompute, one 4096-token chunk).
  absl::Status Recompute() {
    const CacheGeometry g{.sinks = 4, .window = 4092, .ring = 4092};
    ASSIGN_OR_RETURN(auto caches, Caches(1, g));
    std::vector<int64_t> past = {20000};
    RETURN_IF_ERROR(b.SkipTokensForBenchmark(caches[0], past[0]));
    ASSIGN_OR_RETURN(StepTimes stream, Decode(b, caches, past, 3, 30, true));
    Free(caches);
    ASSIGN_OR_RETURN(auto seq, Sequence::Create(&b, {CachePolicy::kRecompute, 0, 4096}, 4096));
    std::vector<int32_t> prompt(4096);
    for (int32_t i = 0; i < 4096; ++i) prompt[i] = i * 31 % b.config().vocab_size;
    RETURN_IF_ERROR(seq->Feed(prompt));  // history full: every later token re-runs 4096
    std::vector<double> wall;
    for (int32_t i = 0; i < 4; ++i) {
      const double t0 = NowMs();
      RETURN_IF_ERROR(seq->Feed({Argmax(seq->last_logits())}));
      if (i > 0) wall.push_back(NowMs() - t0);
    }
    const double recompute = Median(wall);
    std::printf("recompute model=%s cache=4096 streaming_wall_ms=%.3f recompute_wall_ms=%.3f ratio=%.1f "
                "(both copy logits back; paper: 22.2x on A6000)\n",
                model, stream.wall_ms, recompute, recompute / stream.wall_ms);
    std::fflush(stdout);
    return absl::OkStatus();
  }
};

absl::Status RunModel(const Shape& shape, double gbps, bool quick) {
  CudaBackendConfig config;
  config.dtype = "fp16";
  config.gpu_memory_fraction = 0.92;
  config.max_step_tokens = 4096;
  const double t0 = NowMs();
  ASSIGN_OR_RETURN(auto b, CudaBackend::CreateRandom(ConfigOf(shape), config, 1234, 0.02f));
  std::printf("model=%s weights_gib=%.2f pool_gib=%.2f init_s=%.2f kv_bytes_per_token=%lld\n", shape.name,
              b->WeightBytes() / double(1 << 30), b->PoolBytes() / double(1 << 30), (NowMs() - t0) * 1e-3,
              static_cast<long long>(2LL * shape.layers * (shape.kv_heads * (shape.dim / shape.heads)) * 2));
  Bench bench{*b, gbps, shape.name};
  // Batch 1 against the weight-only roofline first.
  RETURN_IF_ERROR(bench.BatchPoint(1, 1024, "batch1"));
  std::printf("batch1 model=%s weights_only_roofline_ms=%.3f\n", shape.name,
              b->WeightBytes() / (gbps * 1e9) * 1e3);
  RETURN_IF_ERROR(bench.Sampling());
  RETURN_IF_ERROR(bench.Graphs());
  const ModelConfig& c = b->config();
  const double layer_params = static_cast<double>(c.n_layers) *
                              (2.0 * c.dim * c.q_dim() + 2.0 * c.dim * c.kv_dim() + 3.0 * c.dim * c.hidden_dim);
  RETURN_IF_ERROR(bench.Prefill(layer_params));
  for (int32_t window : {1024, 4096}) {
    for (int32_t n : {1, 8, 32, 64, 128, 256}) {
      if (quick && n > 8) continue;
      RETURN_IF_ERROR(bench.BatchPoint(n, window, "batch"));
    }
  }
  RETURN_IF_ERROR(bench.Flat());
  RETURN_IF_ERROR(bench.Recompute());
  return absl::OkStatus();
}

int Main(int argc, char** argv) {
  bool quick = false;
  std::vector<Shape> shapes = {kLlama2_7B, kMistral_7B};
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    if (std::strcmp(argv[i], "--llama-only") == 0) shapes = {kLlama2_7B};
    if (std::strcmp(argv[i], "--mistral-only") == 0) shapes = {kMistral_7B};
  }
  if (!CudaDevicePresent()) {
    std::fprintf(stderr, "no CUDA device visible\n");
    return 2;
  }
  const cuda::CopyBandwidth bw = cuda::MeasureCopyBandwidth(int64_t{4} << 30, 20);
  std::printf("copy_bandwidth bytes=%lld median_ms=%.3f read_write_gbps=%.1f (cudaMemcpy D2D, CUDA events)\n",
              static_cast<long long>(bw.bytes), bw.median_ms, bw.read_write_gbps);
  if (bw.bytes == 0) return 1;
  for (const Shape& s : shapes) {
    if (absl::Status st = RunModel(s, bw.read_write_gbps, quick); !st.ok()) {
      std::printf("model=%s error: %s\n", s.name, std::string(st.message()).c_str());
      return 1;
    }
  }
  return 0;
}

}  // namespace
}  // namespace sinkserve

int main(int argc, char** argv) { return sinkserve::Main(argc, argv); }

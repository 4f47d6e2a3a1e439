// The CUDA backend: engine/backend.h on one NVIDIA GPU.
//
// Weights live on the device in fp16 or bf16 (uploaded once; the host copy is
// freed). One KV pool is allocated at startup from a memory budget and every
// cache takes a fixed range of it, so admission fails with RESOURCE_EXHAUSTED
// and a step never hits a CUDA out-of-memory. A step runs every token of the
// batch through cuBLAS GEMMs (fp32 accumulate, fp32 residual stream) and the
// kernels in this folder, on one stream, with one host synchronisation at the
// end: the logits (Forward) or the greedy ids (ForwardGreedy) coming back.
// A step whose kernel launches depend only on its shape (no prefill tiles)
// is captured as a CUDA graph the second time its shape comes, and replayed
// from then on: the per-step metadata lives at fixed device addresses and is
// copied in before the launch.
//
// This header carries no CUDA types, so the engine side can include it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/backend.h"
#include "engine/model/model.h"
#include "kernels/backend_factory.h"

namespace sinkserve {

// True when the CUDA runtime sees at least one device.
bool CudaDevicePresent();

// The factory's entry point (kernels/backend_factory.cc).
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(Model model, const BackendOptions& options);

struct CudaBackendConfig {
  std::string dtype = "fp16";         // fp16 | bf16: weights, GEMM inputs, KV cache
  double gpu_memory_gib = 0;          // KV pool budget; 0 = gpu_memory_fraction
  double gpu_memory_fraction = 0.9;   // of the memory free after weights and scratch
  int32_t max_step_tokens = 2048;     // scratch reserved at startup; larger steps grow it first
  int32_t attention_splits = 0;       // 0 = pick by shape; tests force values
  // Entries with at least this many new tokens use the tiled prefill
  // attention kernel; the rest the decode kernel (one query per block).
  int32_t prefill_min_tokens = 16;
  // Replay a captured CUDA graph for steps whose launches depend only on
  // their shape (every entry on the decode kernel); a shape is captured the
  // second time it is seen.
  bool cuda_graphs = true;
};

class CudaBackend final : public Backend {
 public:
  // Uploads `model`'s weights (validated) and frees the host copy.
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(Model model, const CudaBackendConfig& config);
  // A model whose weights are random and made on the device, never on the
  // host: N(0, scale^2)-like uniform noise, norms 1 + noise (benchmarks).
  static absl::StatusOr<std::unique_ptr<CudaBackend>> CreateRandom(const ModelConfig& model,
                                                                   const CudaBackendConfig& config, uint64_t seed,
                                                                   float scale);
  ~CudaBackend() override;

  std::string_view name() const override { return "cuda"; }
  const ModelConfig& config() const override;
  absl::StatusOr<CacheId> CreateCache(const CacheGeometry& geometry) override;
  void DestroyCache(CacheId id) override;
  absl::Status ResetCache(CacheId id) override;
  std::string KvLayout() const override;
  absl::StatusOr<std::string> ExportCache(CacheId id) const override;
  KvShape ExportShape() const override;
  absl::StatusOr<std::string> ExportCacheSlots(CacheId id, int32_t first, int32_t count) const override;
  absl::Status ImportCache(CacheId id, int64_t consumed, std::string_view bytes) override;
  // Copies (rows, vocab) fp32 logits back; the engine's Sampler then runs any
  // sampling mode on the host.
  using Backend::Forward;
  // No contrastive search yet: `hidden` and candidates entries are UNIMPLEMENTED.
  absl::Status Forward(const Batch& batch, std::vector<float>* logits, std::vector<float>* hidden) override;

  // Greedy decoding on the device: argmax per logits row, and only the
  // (rows) ids come back. Same validation and cache effects as Forward.
  absl::Status ForwardGreedy(const Batch& batch, std::vector<int32_t>* ids);

  // Bytes one cache of this geometry takes from the pool (K and V, all layers).
  int64_t CacheBytes(const CacheGeometry& geometry) const override;
  int64_t PoolBytes() const;
  int64_t PoolUsedBytes() const;
  int64_t WeightBytes() const;  // device bytes of every weight matrix and norm
  std::string DeviceName() const;
  // Device time of the latest successful step (CUDA events around all of its
  // work on the stream, copy-back included), in milliseconds.
  float LastStepDeviceMs() const;

  struct Stats {
    int64_t steps = 0;           // successful Forward / ForwardGreedy calls with tokens
    int64_t graph_launches = 0;  // of those, run as a captured graph
    int64_t graph_captures = 0;  // graphs captured: a repeated shape, or again after an eviction or
                                 // after the step scratch or the RoPE table grew
  };
  Stats stats() const;

  // Benchmark only: counts `n` more tokens as consumed by cache `id` without
  // running them, leaving the cache contents as they are. A step's cost
  // depends on key counts, not key values, so this reaches deep positions
  // (a million tokens in) without a million-token prefill.
  absl::Status SkipTokensForBenchmark(CacheId id, int64_t n);
  // Benchmark only: how later steps run (CudaBackendConfig's fields of the
  // same names). Results are the same either way; this allows timing the
  // paths side by side in one process.
  void SetStepPathForBenchmark(bool cuda_graphs, int32_t prefill_min_tokens);

  struct Impl;

 private:
  explicit CudaBackend(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sinkserve

// The model's weights on the device. Matrices that read the same input are
// stored concatenated so one GEMM serves them: wqkv = [wq; wk; wv] and
// w13 = [w1 (gate); w3 (up)] (a GELU MLP has no gate: w13 = w3). Norm
// weights and LayerNorm biases stay fp32 (they are tiny and feed
// an fp32 computation).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/model.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_memory.h"

namespace sinkserve::cuda {

struct DeviceLayer {
  DevicePtr attn_norm;  // (dim) fp32
  DevicePtr attn_norm_bias;  // (dim) fp32; null when the model has none
  DevicePtr wqkv;       // (q_dim + 2 * kv_dim, dim) storage dtype
  DevicePtr wo;         // (dim, q_dim)
  DevicePtr ffn_norm;   // (dim) fp32
  DevicePtr ffn_norm_bias;  // (dim) fp32; null when the model has none
  DevicePtr w13;        // (2 * hidden_dim, dim): gate rows then up rows; GELU: (hidden_dim, dim) up rows
  DevicePtr w2;         // (dim, hidden_dim)
};

struct DeviceWeights {
  DType dtype = DType::kF16;
  DevicePtr embedding;   // (vocab, dim) storage dtype
  DevicePtr classifier;  // (vocab, dim); null when tied to the embedding
  DevicePtr final_norm;  // (dim) fp32
  DevicePtr final_norm_bias;  // (dim) fp32; null when the model has none
  std::vector<DeviceLayer> layers;
  int64_t bytes = 0;

  const void* Classifier() const { return classifier ? classifier.get() : embedding.get(); }
};

// Uploads `model`'s fp32 host weights, converting on the device. `stream` is
// synchronised before returning. RESOURCE_EXHAUSTED when they do not fit.
absl::StatusOr<DeviceWeights> UploadWeights(const Model& model, DType dtype, cudaStream_t stream);

// Weights made on the device from (seed, scale), never touching the host.
absl::StatusOr<DeviceWeights> RandomWeights(const ModelConfig& config, DType dtype, uint64_t seed, float scale,
                                            cudaStream_t stream);

}  // namespace sinkserve::cuda

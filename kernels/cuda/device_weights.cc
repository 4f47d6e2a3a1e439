#include "kernels/cuda/device_weights.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "kernels/cuda/weight_init.cuh"

namespace sinkserve::cuda {
namespace {

// Element counts of every buffer, shared by both constructors.
struct Shapes {
  int64_t dim, q, kv, hidden, vocab;
  explicit Shapes(const ModelConfig& c)
      : dim(c.dim), q(c.q_dim()), kv(c.kv_dim()), hidden(c.hidden_dim), vocab(c.vocab_size) {}
  int64_t qkv() const { return (q + 2 * kv) * dim; }
  int64_t w13_rows(const ModelConfig& c) const { return c.ffn == FfnKind::kGelu ? hidden : 2 * hidden; }
};

class Allocator {
 public:
  explicit Allocator(DeviceWeights* w) : w_(w) {}
  // Storage-dtype (elements) or fp32 (floats) buffer; records failure.
  DevicePtr Alloc(int64_t elements, bool fp32 = false) {
    const int64_t bytes = elements * (fp32 ? int64_t{sizeof(float)} : kDTypeBytes);
    DevicePtr p = TryDeviceAlloc(bytes);
    if (!p) failed_bytes_ = bytes;
    w_->bytes += bytes;
    return p;
  }
  absl::Status status() const {
    if (failed_bytes_ == 0) return absl::OkStatus();
    return absl::ResourceExhaustedError(absl::StrFormat(
        "model weights (%.2f GiB as %s) do not fit in GPU memory", w_->bytes / double(1 << 30), DTypeName(w_->dtype)));
  }

 private:
  DeviceWeights* w_;
  int64_t failed_bytes_ = 0;
};

// Every buffer; the LayerNorm biases only with `norm_biases`.
absl::Status Allocate(const ModelConfig& c, DType dtype, bool norm_biases, DeviceWeights* w) {
  const Shapes s(c);
  w->dtype = dtype;
  Allocator a(w);
  w->embedding = a.Alloc(s.vocab * s.dim);
  if (!c.tied_classifier) w->classifier = a.Alloc(s.vocab * s.dim);
  w->final_norm = a.Alloc(s.dim, true);
  if (norm_biases) w->final_norm_bias = a.Alloc(s.dim, true);
  w->layers.resize(c.n_layers);
  for (DeviceLayer& l : w->layers) {
    l.attn_norm = a.Alloc(s.dim, true);
    l.wqkv = a.Alloc(s.qkv());
    l.wo = a.Alloc(s.dim * s.q);
    l.ffn_norm = a.Alloc(s.dim, true);
    l.w13 = a.Alloc(s.w13_rows(c) * s.dim);
    l.w2 = a.Alloc(s.dim * s.hidden);
    if (norm_biases) {
      l.attn_norm_bias = a.Alloc(s.dim, true);
      l.ffn_norm_bias = a.Alloc(s.dim, true);
    }
  }
  return a.status();
}

// Host fp32 -> device storage dtype through an fp32 staging buffer.
class Uploader {
 public:
  Uploader(DType dtype, cudaStream_t stream, float* staging, int64_t staging_floats)
      : dtype_(dtype), stream_(stream), staging_(staging), staging_floats_(staging_floats) {}
  // A weight in any file type: dequantized on the host first (the device
  // kernels run fp16/bf16 weights).
  void ToDtype(const Weight& src, void* dst, int64_t dst_offset = 0) {
    if (src.type == GgmlType::kF32) {
      ToDtype(src.f32(), src.rows * src.cols, dst, dst_offset);
      return;
    }
    const std::vector<float> values = src.ToF32();
    ToDtype(values.data(), static_cast<int64_t>(values.size()), dst, dst_offset);
  }
  void ToDtype(const float* src, int64_t count, void* dst, int64_t dst_offset) {
    char* out = static_cast<char*>(dst) + dst_offset * kDTypeBytes;
    for (int64_t begin = 0; begin < count; begin += staging_floats_) {
      const int64_t n = std::min<int64_t>(staging_floats_, count - begin);
      CUDA_CHECK(cudaMemcpyAsync(staging_, src + begin, n * sizeof(float), cudaMemcpyHostToDevice, stream_));
      LaunchConvertF32(dtype_, staging_, out + begin * kDTypeBytes, n, stream_);
      CUDA_CHECK(cudaStreamSynchronize(stream_));  // the staging buffer is reused next
    }
  }
  void ToF32(const std::vector<float>& src, void* dst) {
    CUDA_CHECK(cudaMemcpy(dst, src.data(), src.size() * sizeof(float), cudaMemcpyHostToDevice));
  }

 private:
  DType dtype_;
  cudaStream_t stream_;
  float* staging_;
  int64_t staging_floats_;
};

}  // namespace

absl::StatusOr<DeviceWeights> UploadWeights(const Model& model, DType dtype, cudaStream_t stream) {
  const ModelConfig& c = model.config;
  if (!c.rope_freq_factors.empty() || c.rope_freq_scale != 1.0f) {
    return absl::UnimplementedError(
        "the CUDA backend does not apply RoPE frequency factors or scaling (Llama 3.1, linear) yet; serve this "
        "model with --backend cpu");
  }
  if (model.weights.has_attention_bias()) {
    return absl::UnimplementedError(
        "the CUDA backend does not run attention biases (qwen2) yet; serve this model with --backend cpu");
  }
  const Shapes s(c);
  DeviceWeights w;
  const bool norm_biases = !model.weights.final_norm_bias.empty();
  if (absl::Status st = Allocate(c, dtype, norm_biases, &w); !st.ok()) return st;
  constexpr int64_t kStagingFloats = int64_t{1} << 24;  // 64 MiB
  DevicePtr staging = TryDeviceAlloc(kStagingFloats * sizeof(float));
  if (!staging) return absl::ResourceExhaustedError("no GPU memory left for the 64 MiB upload staging buffer");
  Uploader up(dtype, stream, As<float>(staging), kStagingFloats);
  const ModelWeights& mw = model.weights;
  up.ToDtype(mw.token_embedding, w.embedding.get());
  if (!c.tied_classifier) up.ToDtype(mw.classifier, w.classifier.get());
  up.ToF32(mw.final_norm, w.final_norm.get());
  if (norm_biases) up.ToF32(mw.final_norm_bias, w.final_norm_bias.get());
  for (int32_t i = 0; i < c.n_layers; ++i) {
    const LayerWeights& src = mw.layers[i];
    DeviceLayer& dst = w.layers[i];
    up.ToF32(src.attn_norm, dst.attn_norm.get());
    up.ToF32(src.ffn_norm, dst.ffn_norm.get());
    if (norm_biases) {
      up.ToF32(src.attn_norm_bias, dst.attn_norm_bias.get());
      up.ToF32(src.ffn_norm_bias, dst.ffn_norm_bias.get());
    }
    up.ToDtype(src.wq, dst.wqkv.get(), 0);
    up.ToDtype(src.wk, dst.wqkv.get(), s.q * s.dim);
    up.ToDtype(src.wv, dst.wqkv.get(), (s.q + s.kv) * s.dim);
    up.ToDtype(src.wo, dst.wo.get());
    if (c.ffn == FfnKind::kGelu) {
      up.ToDtype(src.w3, dst.w13.get(), 0);
    } else {
      up.ToDtype(src.w1, dst.w13.get(), 0);
      up.ToDtype(src.w3, dst.w13.get(), s.hidden * s.dim);
    }
    up.ToDtype(src.w2, dst.w2.get());
  }
  CUDA_CHECK(cudaStreamSynchronize(stream));
  return w;
}

absl::StatusOr<DeviceWeights> RandomWeights(const ModelConfig& c, DType dtype, uint64_t seed, float scale,
                                            cudaStream_t stream) {
  const Shapes s(c);
  DeviceWeights w;
  if (absl::Status st = Allocate(c, dtype, /*norm_biases=*/false, &w); !st.ok()) return st;
  uint64_t stream_id = seed * 1000003u;
  auto fill = [&](const DevicePtr& p, int64_t n) { LaunchRandomFill(dtype, p.get(), n, ++stream_id, 0.0f, scale, stream); };
  auto norm = [&](const DevicePtr& p) { LaunchRandomFillF32(As<float>(p), s.dim, ++stream_id, 1.0f, scale, stream); };
  fill(w.embedding, s.vocab * s.dim);
  if (w.classifier) fill(w.classifier, s.vocab * s.dim);
  norm(w.final_norm);
  for (DeviceLayer& l : w.layers) {
    norm(l.attn_norm);
    norm(l.ffn_norm);
    fill(l.wqkv, s.qkv());
    fill(l.wo, s.dim * s.q);
    fill(l.w13, s.w13_rows(c) * s.dim);
    fill(l.w2, s.dim * s.hidden);
  }
  CUDA_CHECK(cudaStreamSynchronize(stream));
  return w;
}

}  // namespace sinkserve::cuda

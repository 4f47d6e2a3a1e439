#include "kernels/cpu/quant_ops.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

namespace sinkserve::cpu {
namespace {

#define SINKSERVE_INLINE [[gnu::always_inline]] inline

constexpr int kQK = 32;    // values per legacy block (Q4_0 ... Q8_0, Q8_1)
constexpr int kQKK = 256;  // values per K block

constexpr int kQ8_0Bytes = kQ8_0ActivationBytes;
constexpr int kQ8_1Bytes = kQ8_1ActivationBytes;
constexpr int kQ8_KBytes = kQ8_KActivationBytes;

enum class ActType { kQ8_0, kQ8_1, kQ8_K };

ActType ActivationType(GgmlType w) {
  switch (w) {
    case GgmlType::kQ4_1:
    case GgmlType::kQ5_1:
      return ActType::kQ8_1;
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K:
    case GgmlType::kQ6_K:
      return ActType::kQ8_K;
    default:
      return ActType::kQ8_0;
  }
}


SINKSERVE_INLINE int32_t DotI8(const int8_t* a, const int8_t* b, int n) {
  int32_t sum = 0;
  for (int j = 0; j < n; ++j) sum += int32_t{a[j]} * int32_t{b[j]};
  return sum;
}

// ---- Activations ----------------------------------------------------------

// Round half to even, as the SIMD path; a NaN (a broken model's) becomes 0.
SINKSERVE_INLINE int8_t RoundToInt8(float v) {
  const float r = std::nearbyintf(v);
  if (std::isnan(r)) return 0;
  return static_cast<int8_t>(std::clamp(r, -128.0f, 127.0f));
}

// A Q8_0 / Q8_1 block's fp16 fields: d, and for Q8_1 d times the sum of its q.
SINKSERVE_INLINE void WriteQ8_0Scales(uint8_t* out, float d, int32_t sum, bool with_sum) {
  const uint16_t dh = FloatToHalf(d);
  std::memcpy(out, &dh, 2);
  if (with_sum) {
    const uint16_t sh = FloatToHalf(static_cast<float>(sum) * d);
    std::memcpy(out + 2, &sh, 2);
  }
}

void QuantizeQ8_0(const float* x, int64_t k, uint8_t* out, bool with_sum) {
  const int block_bytes = with_sum ? kQ8_1Bytes : kQ8_0Bytes;
  for (int64_t b = 0; b < k / kQK; ++b, x += kQK, out += block_bytes) {
    float amax = 0.0f;
    for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    auto* q = reinterpret_cast<int8_t*>(out + (with_sum ? 4 : 2));
    int32_t sum = 0;
    for (int j = 0; j < kQK; ++j) {
      q[j] = RoundToInt8(x[j] * id);
      sum += q[j];
    }
    WriteQ8_0Scales(out, d, sum, with_sum);
  }
}

// Rounds 256 values times `iscale` to int8 (half to even), capped at 127.
using RoundQ8_KFn = void (*)(const float* x, float iscale, int8_t* q);

void RoundQ8_K(const float* x, float iscale, int8_t* q) {
  for (int j = 0; j < kQKK; ++j) q[j] = RoundToInt8(iscale * x[j]);
}

// One Q8_K block. The value of largest magnitude, with its sign (`max`, 0
// when every value is 0), maps to -127, so every q fits [-127, 127] (ggml's
// Q8_K convention; d may be negative).
SINKSERVE_INLINE void WriteQ8_KBlock(const float* x, float max, RoundQ8_KFn round, uint8_t* out) {
  auto* q = reinterpret_cast<int8_t*>(out + 4);
  int16_t bsums[kQKK / 16];
  float d = 0.0f;
  if (max == 0.0f) {
    std::memset(q, 0, kQKK);
    std::memset(bsums, 0, sizeof(bsums));
  } else {
    const float iscale = -127.0f / max;
    round(x, iscale, q);
    for (int s = 0; s < kQKK / 16; ++s) {
      int sum = 0;
      for (int j = 0; j < 16; ++j) sum += q[16 * s + j];
      bsums[s] = static_cast<int16_t>(sum);
    }
    d = 1.0f / iscale;
  }
  std::memcpy(out, &d, 4);
  std::memcpy(out + 4 + kQKK, bsums, sizeof(bsums));
}

// The first value of largest magnitude, with its sign (NaNs are passed over).
float SignedMaxAbs(const float* x) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < kQKK; ++j) {
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  return max;
}

void QuantizeQ8_K(const float* x, int64_t k, uint8_t* out) {
  for (int64_t b = 0; b < k / kQKK; ++b, x += kQKK, out += kQ8_KBytes) {
    WriteQ8_KBlock(x, SignedMaxAbs(x), RoundQ8_K, out);
  }
}

// The same two quantizers in AVX2 (every level with SIMD kernels has it):
// the same products and the same round-to-nearest-even, so their bytes equal
// the scalar loops' bytes. They run on the engine thread between matrix
// products, while the other threads wait.
#define SINKSERVE_AVX2 [[gnu::target("avx2,fma,f16c")]]

SINKSERVE_AVX2 inline float MaxAbs8(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}

// 32 floats times `scale`, rounded to int8 (|x * scale| <= 127.5 rounds
// inside [-128, 127]; the caller clamps where it must). Returns the sum.
SINKSERVE_AVX2 inline int32_t RoundPack32(const float* x, float scale, int8_t* out, int32_t max) {
  const __m256 s = _mm256_set1_ps(scale);
  __m256i q[4];
  for (int i = 0; i < 4; ++i) {
    const __m256 r = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * i), s),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    q[i] = _mm256_min_epi32(_mm256_cvtps_epi32(r), _mm256_set1_epi32(max));
  }
  const __m256i sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
  // packs works within 128-bit lanes; the permutation puts the bytes back
  // in order.
  const __m256i bytes = _mm256_permutevar8x32_epi32(
      _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3])),
      _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), bytes);
  __m128i t = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
  t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4e));
  t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1));
  return _mm_cvtsi128_si32(t);
}

SINKSERVE_AVX2 void QuantizeQ8_0Avx2(const float* x, int64_t k, uint8_t* out, bool with_sum) {
  const int block_bytes = with_sum ? kQ8_1Bytes : kQ8_0Bytes;
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  for (int64_t b = 0; b < k / kQK; ++b, x += kQK, out += block_bytes) {
    __m256 m = _mm256_setzero_ps();
    for (int i = 0; i < 4; ++i) m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(x + 8 * i), abs_mask));
    const float d = MaxAbs8(m) / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const int32_t sum = RoundPack32(x, id, reinterpret_cast<int8_t*>(out + (with_sum ? 4 : 2)), 127);
    WriteQ8_0Scales(out, d, sum, with_sum);
  }
}

SINKSERVE_AVX2 void RoundQ8_KAvx2(const float* x, float iscale, int8_t* q) {
  for (int i = 0; i < kQKK / 32; ++i) RoundPack32(x + 32 * i, iscale, q + 32 * i, 127);
}

SINKSERVE_AVX2 void QuantizeQ8_KAvx2(const float* x, int64_t k, uint8_t* out) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  for (int64_t b = 0; b < k / kQKK; ++b, x += kQKK, out += kQ8_KBytes) {
    __m256 m = _mm256_setzero_ps();
    for (int i = 0; i < kQKK / 8; ++i) m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(x + 8 * i), abs_mask));
    const float amax = MaxAbs8(m);
    // The first value of that magnitude, as the scalar loop picks it (a NaN
    // in the block: the scalar search, which passes NaNs over).
    int j = 0;
    while (j < kQKK && std::fabs(x[j]) != amax) ++j;
    WriteQ8_KBlock(x, amax == 0.0f ? 0.0f : (j < kQKK ? x[j] : SignedMaxAbs(x)), RoundQ8_KAvx2, out);
  }
}

// ---- Weight blocks, unpacked to int8 ----------------------------------------

// Q4_K / Q5_K: q[256] in [0, 31], eight (scale, min) pairs.
SINKSERVE_INLINE void UnpackQ45K(const uint8_t* b, bool five_bits, int8_t* q, uint8_t* sc, uint8_t* mn) {
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* ql = five_bits ? b + 48 : b + 16;
  for (int s = 0; s < 8; ++s) ScaleMinK4(s, scales, &sc[s], &mn[s]);
  for (int pair = 0; pair < 4; ++pair) {
    const uint8_t* src = ql + 32 * pair;
    int8_t* lo = q + 64 * pair;
    int8_t* hi = lo + 32;
    for (int l = 0; l < 32; ++l) {
      lo[l] = static_cast<int8_t>(src[l] & 0xF);
      hi[l] = static_cast<int8_t>(src[l] >> 4);
    }
    if (five_bits) {
      for (int l = 0; l < 32; ++l) {
        lo[l] = static_cast<int8_t>(lo[l] | (((qh[l] >> (2 * pair)) & 1) << 4));
        hi[l] = static_cast<int8_t>(hi[l] | (((qh[l] >> (2 * pair + 1)) & 1) << 4));
      }
    }
  }
}

// Q6_K: q[256] in [-32, 31].
SINKSERVE_INLINE void UnpackQ6K(const uint8_t* b, int8_t* q) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  for (int half = 0; half < 2; ++half, q += 128, ql += 64, qh += 32) {
    for (int l = 0; l < 32; ++l) {
      q[l] = static_cast<int8_t>(((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
      q[l + 32] = static_cast<int8_t>(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
      q[l + 64] = static_cast<int8_t>(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
      q[l + 96] = static_cast<int8_t>(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
    }
  }
}

// Legacy blocks: q[32] as int8 (Q4_0/Q5_0 centred, Q4_1/Q5_1 not).
SINKSERVE_INLINE void UnpackLegacy(GgmlType type, const uint8_t* b, int8_t* q) {
  switch (type) {
    case GgmlType::kQ4_0:
    case GgmlType::kQ4_1: {
      const uint8_t* qs = b + (type == GgmlType::kQ4_0 ? 2 : 4);
      const int offset = type == GgmlType::kQ4_0 ? 8 : 0;
      for (int j = 0; j < 16; ++j) {
        q[j] = static_cast<int8_t>((qs[j] & 0xF) - offset);
        q[j + 16] = static_cast<int8_t>((qs[j] >> 4) - offset);
      }
      break;
    }
    case GgmlType::kQ5_0:
    case GgmlType::kQ5_1: {
      const int head = type == GgmlType::kQ5_0 ? 2 : 4;
      uint32_t qh;
      std::memcpy(&qh, b + head, 4);
      const uint8_t* qs = b + head + 4;
      const int offset = type == GgmlType::kQ5_0 ? 16 : 0;
      for (int j = 0; j < 16; ++j) {
        q[j] = static_cast<int8_t>(((qs[j] & 0xF) | (((qh >> j) & 1) << 4)) - offset);
        q[j + 16] = static_cast<int8_t>(((qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - offset);
      }
      break;
    }
    default:  // Q8_0
      std::memcpy(q, b + 2, kQK);
      break;
  }
}

// ---- Dot products -----------------------------------------------------------

SINKSERVE_INLINE float DotLegacy(GgmlType type, const uint8_t* w, const uint8_t* x, int64_t k) {
  const GgmlTypeTraits& t = *FindGgmlType(static_cast<uint32_t>(type));
  const bool with_min = type == GgmlType::kQ4_1 || type == GgmlType::kQ5_1;
  const int x_bytes = with_min ? kQ8_1Bytes : kQ8_0Bytes;
  float sum = 0.0f;
  int8_t q[kQK];
  for (int64_t b = 0; b < k / kQK; ++b, w += t.block_bytes, x += x_bytes) {
    UnpackLegacy(type, w, q);
    const int32_t sumi = DotI8(q, reinterpret_cast<const int8_t*>(x + (with_min ? 4 : 2)), kQK);
    sum += static_cast<float>(sumi) * (LoadHalf(w) * LoadHalf(x));
    if (with_min) sum += LoadHalf(w + 2) * LoadHalf(x + 2);
  }
  return sum;
}

SINKSERVE_INLINE float DotQ45K(bool five_bits, const uint8_t* w, const uint8_t* x, int64_t k) {
  const int w_bytes = five_bits ? 176 : 144;
  float sum = 0.0f;
  int8_t q[kQKK];
  uint8_t sc[8], mn[8];
  for (int64_t b = 0; b < k / kQKK; ++b, w += w_bytes, x += kQ8_KBytes) {
    UnpackQ45K(w, five_bits, q, sc, mn);
    const auto* y = reinterpret_cast<const int8_t*>(x + 4);
    int16_t bsums[16];
    std::memcpy(bsums, x + 4 + kQKK, sizeof(bsums));
    int32_t sum_q = 0, sum_m = 0;
    for (int s = 0; s < 8; ++s) {
      sum_q += int32_t{sc[s]} * DotI8(q + 32 * s, y + 32 * s, 32);
      sum_m += int32_t{mn[s]} * (int32_t{bsums[2 * s]} + bsums[2 * s + 1]);
    }
    float yd;
    std::memcpy(&yd, x, 4);
    sum += yd * (LoadHalf(w) * static_cast<float>(sum_q) - LoadHalf(w + 2) * static_cast<float>(sum_m));
  }
  return sum;
}

SINKSERVE_INLINE float DotQ6K(const uint8_t* w, const uint8_t* x, int64_t k) {
  float sum = 0.0f;
  int8_t q[kQKK];
  for (int64_t b = 0; b < k / kQKK; ++b, w += 210, x += kQ8_KBytes) {
    UnpackQ6K(w, q);
    const auto* sc = reinterpret_cast<const int8_t*>(w + 192);
    const auto* y = reinterpret_cast<const int8_t*>(x + 4);
    int32_t sumi = 0;
    for (int s = 0; s < 16; ++s) sumi += int32_t{sc[s]} * DotI8(q + 16 * s, y + 16 * s, 16);
    float yd;
    std::memcpy(&yd, x, 4);
    sum += yd * LoadHalf(w + 208) * static_cast<float>(sumi);
  }
  return sum;
}

SINKSERVE_INLINE float Dot(GgmlType type, const uint8_t* w, const uint8_t* x, int64_t k) {
  switch (type) {
    case GgmlType::kQ4_K: return DotQ45K(false, w, x, k);
    case GgmlType::kQ5_K: return DotQ45K(true, w, x, k);
    case GgmlType::kQ6_K: return DotQ6K(w, x, k);
    default: return DotLegacy(type, w, x, k);
  }
}

// 2: AVX-512 with VNNI (x86-64-v4), 1: AVX2 and FMA (x86-64-v3), 0: neither.
int SimdLevel() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni")) {
    return 2;
  }
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1 : 0;
}

}  // namespace

// The per-level kernels (quant_avx2.cc, quant_avx512.cc): false for types
// they do not cover.
namespace avx2 {
bool QuantMatMul(float* out, int64_t stride, const uint8_t* xq, int32_t tokens, const Weight& w, int64_t r0,
                 int64_t r1);
}  // namespace avx2
namespace avx512 {
bool QuantMatMul(float* out, int64_t stride, const uint8_t* xq, int32_t tokens, const Weight& w, int64_t r0,
                 int64_t r1);
}  // namespace avx512

bool IsQuantized(GgmlType type) {
  return IsWeightType(type) && type != GgmlType::kF32 && type != GgmlType::kF16 && type != GgmlType::kBF16;
}

int64_t ActivationRowBytes(GgmlType weight_type, int64_t k) {
  switch (ActivationType(weight_type)) {
    case ActType::kQ8_0: return k / kQK * kQ8_0Bytes;
    case ActType::kQ8_1: return k / kQK * kQ8_1Bytes;
    case ActType::kQ8_K: return k / kQKK * kQ8_KBytes;
  }
  return 0;
}

void QuantizeActivations(GgmlType weight_type, const float* x, int64_t k, uint8_t* out) {
  static const bool avx2 = SimdLevel() >= 1;
  if (avx2) {
    switch (ActivationType(weight_type)) {
      case ActType::kQ8_0: QuantizeQ8_0Avx2(x, k, out, /*with_sum=*/false); return;
      case ActType::kQ8_1: QuantizeQ8_0Avx2(x, k, out, /*with_sum=*/true); return;
      case ActType::kQ8_K: QuantizeQ8_KAvx2(x, k, out); return;
    }
  }
  QuantizeActivationsReference(weight_type, x, k, out);
}

void QuantizeActivationsReference(GgmlType weight_type, const float* x, int64_t k, uint8_t* out) {
  switch (ActivationType(weight_type)) {
    case ActType::kQ8_0: QuantizeQ8_0(x, k, out, /*with_sum=*/false); return;
    case ActType::kQ8_1: QuantizeQ8_0(x, k, out, /*with_sum=*/true); return;
    case ActType::kQ8_K: QuantizeQ8_K(x, k, out); return;
  }
}

float QuantDot(GgmlType weight_type, const uint8_t* w, const uint8_t* x, int64_t k) {
  return Dot(weight_type, w, x, k);
}

void QuantMatMul(float* out, int64_t out_stride, const uint8_t* xq, int32_t tokens, const Weight& w,
                 int64_t row_begin, int64_t row_end) {
  // The SIMD kernels (quant_simd.inc) for the best level this CPU has; the
  // scalar loop below is the reference, and the fallback for other types.
  static const int level = SimdLevel();
  if (level >= 2 && avx512::QuantMatMul(out, out_stride, xq, tokens, w, row_begin, row_end)) return;
  if (level >= 1 && avx2::QuantMatMul(out, out_stride, xq, tokens, w, row_begin, row_end)) return;
  QuantMatMulReference(out, out_stride, xq, tokens, w, row_begin, row_end);
}

bool QuantMatMulAtLevel(int level, float* out, int64_t out_stride, const uint8_t* xq, int32_t tokens,
                        const Weight& w, int64_t row_begin, int64_t row_end) {
  if (level > SimdLevel()) return false;
  if (level == 2) return avx512::QuantMatMul(out, out_stride, xq, tokens, w, row_begin, row_end);
  if (level == 1) return avx2::QuantMatMul(out, out_stride, xq, tokens, w, row_begin, row_end);
  return false;
}

void QuantMatMulReference(float* out, int64_t out_stride, const uint8_t* xq, int32_t tokens, const Weight& w,
                          int64_t row_begin, int64_t row_end) {
  const int64_t x_bytes = ActivationRowBytes(w.type, w.cols);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const uint8_t* row = w.row(r);
    for (int32_t t = 0; t < tokens; ++t) out[t * out_stride + r] = Dot(w.type, row, xq + t * x_bytes, w.cols);
  }
}

}  // namespace sinkserve::cpu

// Sixteen-float SIMD values for the CPU fast paths, via the GCC/Clang vector
// extension: one AVX-512 register, two AVX2 ones, or four SSE ones, whatever
// -march allows. Loads and stores go through memcpy, so nothing assumes
// alignment. Internal to kernels/cpu.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace sinkserve::cpu::simd {

typedef float Vec16 __attribute__((vector_size(64)));
typedef int32_t IVec16 __attribute__((vector_size(64)));
inline constexpr int32_t kLanes = 16;

inline Vec16 Load(const float* p) {
  Vec16 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void Store(float* p, Vec16 v) { std::memcpy(p, &v, sizeof(v)); }

inline Vec16 Splat(float x) { return Vec16{} + x; }

typedef float Vec8 __attribute__((vector_size(32)));
typedef float Vec4 __attribute__((vector_size(16)));

// Tree reductions: 16 -> 8 -> 4 lanes as vectors, then the last four.
inline float HorizontalSum(Vec16 v) {
  const Vec8 h = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                 __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const Vec4 q = __builtin_shufflevector(h, h, 0, 1, 2, 3) + __builtin_shufflevector(h, h, 4, 5, 6, 7);
  return (q[0] + q[1]) + (q[2] + q[3]);
}

inline float HorizontalMax(Vec16 v) {
  const Vec8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7);
  const Vec8 b = __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const Vec8 h = a > b ? a : b;
  const Vec4 c = __builtin_shufflevector(h, h, 0, 1, 2, 3);
  const Vec4 d = __builtin_shufflevector(h, h, 4, 5, 6, 7);
  const Vec4 q = c > d ? c : d;
  const float m01 = q[0] > q[1] ? q[0] : q[1];
  const float m23 = q[2] > q[3] ? q[2] : q[3];
  return m01 > m23 ? m01 : m23;
}

// e^r for r in [-ln2/2, ln2/2]: Cephes' degree-6 polynomial, shared by the
// two exps below.
inline Vec16 ExpOfReduced(Vec16 r) {
  Vec16 p = Splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  return p * r * r + r + 1.0f;
}

// exp(x) as 2^n * e^r, n = round(x / ln 2), r = x - n ln 2 in [-ln2/2, ln2/2],
// with Cephes' degree-6 polynomial for e^r: within a few ulp of std::exp on
// [-87, 88]. Below -87 (where exp is under 2^-125) the result is 0, so -inf
// masks a lane out; above 88 it is clamped. Rounding uses the 1.5 * 2^23
// trick, whose low mantissa bits then hold n.
inline Vec16 Exp(Vec16 x) {
  const auto underflow = x < -87.0f;
  x = underflow ? Splat(-87.0f) : x;
  x = x > 88.0f ? Splat(88.0f) : x;
  const Vec16 shifter = Splat(12582912.0f);  // 1.5 * 2^23
  const Vec16 biased = x * 1.44269504088896341f + shifter;
  const Vec16 n = biased - shifter;
  const Vec16 p = ExpOfReduced(x - n * 0.693359375f + n * 2.12194440e-4f);
  IVec16 bits;
  std::memcpy(&bits, &biased, sizeof(bits));
  IVec16 shifter_bits;
  std::memcpy(&shifter_bits, &shifter, sizeof(shifter_bits));
  const IVec16 exponent = (bits - shifter_bits + 127) << 23;
  Vec16 scale;
  std::memcpy(&scale, &exponent, sizeof(scale));
  return underflow ? Splat(0.0f) : p * scale;
}

// exp(x) for softmax arguments, x <= 0 or -inf: Exp's polynomial, with
// AVX-512's scalef building 2^n * p, so the clamps, the integer exponent
// arithmetic and the underflow select go away. Lanes below -87, -inf
// included, are exactly 0 as in Exp, so masked keys weigh nothing. Measured
// 6-7% off the attention kernel (bench/results/cpu/attention-experiments.txt).
// Without AVX-512 it is Exp.
inline Vec16 ExpNonPositive(Vec16 x) {
#if defined(__AVX512F__)
  // (The zero-masked forms of max and roundscale with a full mask: GCC 12
  // warns about the unmasked ones' undefined pass-through operand.)
  constexpr __mmask16 kAll = 0xFFFF;
  __m512 v;
  std::memcpy(&v, &x, sizeof(v));
  const __mmask16 live = _mm512_cmp_ps_mask(v, _mm512_set1_ps(-87.0f), _CMP_GE_OQ);
  v = _mm512_maskz_max_ps(kAll, v, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_maskz_roundscale_ps(kAll, _mm512_mul_ps(v, _mm512_set1_ps(1.44269504088896341f)),
                                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), v);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  Vec16 reduced;
  std::memcpy(&reduced, &r, sizeof(reduced));
  const Vec16 poly = ExpOfReduced(reduced);
  __m512 p;
  std::memcpy(&p, &poly, sizeof(p));
  const __m512 e = _mm512_maskz_scalef_ps(live, p, n);
  Vec16 out;
  std::memcpy(&out, &e, sizeof(out));
  return out;
#else
  return Exp(x);
#endif
}

// Scalar exp with the same formula, for tails.
inline float Exp(float x) {
  Vec16 v = Splat(x);
  return Exp(v)[0];
}

}  // namespace sinkserve::cpu::simd

// Matrix-vector products over weights kept in their ggml block types
// (engine/model/quant.h), as llama.cpp computes them: each activation row is
// quantized per block to int8 (Q8_0, Q8_1 or Q8_K, whichever the weight type
// pairs with), and every block's dot product is an integer sum scaled once.
//
// The activation layouts:
//   Q8_0  32 values: fp16 d, int8 q[32]                 x ~= d * q
//   Q8_1  32 values: fp16 d, fp16 s = d * sum(q), int8 q[32]
//   Q8_K  256 values: fp32 d, int8 q[256], int16 bsums[16] (sums of 16 q)
// The scalar loops here are the readable reference; kernels/cpu/
// quant_simd.inc has AVX2 and AVX-512 VNNI kernels for Q8_0, Q4_0, Q4_K, Q5_K
// and Q6_K, built for both levels and picked at run time by the CPU's
// features (the container builds for x86-64-v3, dev boxes have AVX-512).
#pragma once

#include <cstdint>

#include "engine/model/quant.h"
#include "engine/model/weight.h"

namespace sinkserve::cpu {

// Bytes of one activation block in each layout above.
inline constexpr int kQ8_0ActivationBytes = 2 + 32;
inline constexpr int kQ8_1ActivationBytes = 4 + 32;
inline constexpr int kQ8_KActivationBytes = 4 + 256 + 2 * 16;

// True for the block types QuantMatMul runs (the rest go through fp32).
bool IsQuantized(GgmlType type);

// Bytes of one activation row of k values quantized for `weight_type`.
int64_t ActivationRowBytes(GgmlType weight_type, int64_t k);

// Quantizes one activation row x (k values, a multiple of the block) into
// `out` (ActivationRowBytes(weight_type, k) bytes).
void QuantizeActivations(GgmlType weight_type, const float* x, int64_t k, uint8_t* out);
// The same through the scalar loops (QuantizeActivations uses AVX2 where the
// CPU has it; both write the same bytes).
void QuantizeActivationsReference(GgmlType weight_type, const float* x, int64_t k, uint8_t* out);

// The dot product of weight row `w` (k values of `weight_type`) with an
// activation row quantized for it.
float QuantDot(GgmlType weight_type, const uint8_t* w, const uint8_t* x, int64_t k);

// out[t * out_stride + r] = dot(w row r, x row t) for rows [row_begin,
// row_end) and tokens [0, tokens); `xq` holds the tokens' activation rows
// (ActivationRowBytes each). Each weight row is read once for all tokens.
void QuantMatMul(float* out, int64_t out_stride, const uint8_t* xq, int32_t tokens, const Weight& w,
                 int64_t row_begin, int64_t row_end);
// The same through the SIMD kernels of one level (1: AVX2, 2: AVX-512 VNNI),
// for tests: false when this CPU lacks the level or it has no kernel for the
// weight's type.
bool QuantMatMulAtLevel(int level, float* out, int64_t out_stride, const uint8_t* xq, int32_t tokens,
                        const Weight& w, int64_t row_begin, int64_t row_end);
// The same through the scalar reference loops only.
void QuantMatMulReference(float* out, int64_t out_stride, const uint8_t* xq, int32_t tokens, const Weight& w,
                          int64_t row_begin, int64_t row_end);

}  // namespace sinkserve::cpu

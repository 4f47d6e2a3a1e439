// ggml tensor types and their block layouts, as GGUF files store weights.
//
// A row of `cols` values is cols / BlockSize(type) blocks of BlockBytes(type)
// bytes each. The layouts (little-endian, fp16 = IEEE half):
//   F32, F16, BF16  one value per "block"
//   Q8_0  32 values: fp16 d, int8 q[32]                      x = d * q
//   Q4_0  32 values: fp16 d, u8 qs[16]                       x = d * (nibble - 8)
//   Q4_1  32 values: fp16 d, fp16 m, u8 qs[16]               x = d * nibble + m
//   Q5_0  32 values: fp16 d, u32 qh, u8 qs[16]               x = d * (nibble | bit << 4 - 16)
//   Q5_1  32 values: fp16 d, fp16 m, u32 qh, u8 qs[16]       x = d * (nibble | bit << 4) + m
//         (value j < 16 takes the low nibble of qs[j] and bit j of qh; value
//         j + 16 the high nibble of qs[j] and bit j + 16)
//   Q4_K  256 values: fp16 d, fp16 dmin, u8 scales[12], u8 qs[128]: eight
//         sub-blocks of 32, each with a 6-bit scale and a 6-bit min packed in
//         `scales`; x = d * scale * nibble - dmin * min
//   Q5_K  256 values: Q4_K plus u8 qh[32], the fifth bit of each value
//   Q6_K  256 values: u8 ql[128], u8 qh[64], int8 scales[16], fp16 d: sixteen
//         sub-blocks of 16; x = d * scale * (6-bit q - 32)
// Activations for the integer dot products use the Q8 layouts below.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace sinkserve {

enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kBF16 = 30,
};

// "F32", "Q4_K", ... or "type <n>" for numbers this table does not know.
std::string GgmlTypeName(uint32_t type);

// Block geometry of a type, or nullptr for an unknown number. Covers every
// type GGUF files are known to carry, also those the weights cannot use.
struct GgmlTypeTraits {
  const char* name;
  int32_t block;        // values per block
  int32_t block_bytes;  // bytes per block
};
const GgmlTypeTraits* FindGgmlType(uint32_t type);

// True for the types a weight matrix may have (DequantizeRow handles them).
bool IsWeightType(GgmlType type);
// Bytes of one row of `cols` values; cols must be a multiple of the block.
int64_t RowBytes(GgmlType type, int64_t cols);

float HalfToFloat(uint16_t h);
uint16_t FloatToHalf(float f);  // round to nearest even, as ggml does
// The fp16 value stored (little-endian, unaligned) at p.
float LoadHalf(const uint8_t* p);
// The 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K block, from
// its 12 packed scale bytes.
void ScaleMinK4(int j, const uint8_t* scales, uint8_t* scale, uint8_t* min);

// Dequantizes `n` values (a multiple of the type's block) from `src` to
// `dst`. `type` must satisfy IsWeightType.
void DequantizeRow(GgmlType type, const uint8_t* src, float* dst, int64_t n);

}  // namespace sinkserve

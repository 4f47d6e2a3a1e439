// A weight matrix as the model file stores it: (rows, cols) row-major, each
// row RowBytes(type, cols) bytes in one of the ggml types (quant.h). The
// bytes usually live in the model file's memory mapping, which `owner` keeps
// alive, so a quantized model costs its file size in memory, not 4x it.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/model/quant.h"

namespace sinkserve {

struct Weight {
  GgmlType type = GgmlType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  const uint8_t* data = nullptr;       // rows * row_bytes() bytes
  std::shared_ptr<const void> owner;   // keeps `data` alive

  // A weight that owns fp32 values (rows * cols of them).
  static Weight FromF32(std::vector<float> values, int64_t rows, int64_t cols);
  // A weight that owns `bytes` (rows * RowBytes(type, cols) of them).
  static Weight Own(GgmlType type, int64_t rows, int64_t cols, std::vector<uint8_t> bytes);
  // A weight that owns a copy of `bytes` (rows * RowBytes(type, cols)).
  static Weight Copy(GgmlType type, int64_t rows, int64_t cols, const uint8_t* bytes);

  bool empty() const { return data == nullptr; }
  int64_t row_bytes() const { return RowBytes(type, cols); }
  int64_t bytes() const { return rows * row_bytes(); }
  const uint8_t* row(int64_t r) const { return data + r * row_bytes(); }
  // The fp32 values; type must be kF32.
  const float* f32() const { return reinterpret_cast<const float*>(data); }

  // Rows [begin, begin + count) as a weight of their own, sharing the bytes
  // (a fused matrix split into its parts). The range must lie inside.
  Weight Rows(int64_t begin, int64_t count) const {
    Weight w = *this;
    w.rows = count;
    w.data = row(begin);
    return w;
  }
  // Row r as fp32 (cols values).
  void DequantizeRowTo(int64_t r, float* out) const { DequantizeRow(type, row(r), out, cols); }
  // The whole matrix as fp32 (rows * cols values).
  std::vector<float> ToF32() const;
  // Frees this handle's hold on the bytes.
  void Release() { *this = Weight(); }
};

}  // namespace sinkserve

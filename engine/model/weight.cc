#include "engine/model/weight.h"

#include <cstring>

namespace sinkserve {

Weight Weight::FromF32(std::vector<float> values, int64_t rows, int64_t cols) {
  auto storage = std::make_shared<std::vector<float>>(std::move(values));
  Weight w;
  w.type = GgmlType::kF32;
  w.rows = rows;
  w.cols = cols;
  w.data = reinterpret_cast<const uint8_t*>(storage->data());
  w.owner = std::move(storage);
  return w;
}

Weight Weight::Copy(GgmlType type, int64_t rows, int64_t cols, const uint8_t* bytes) {
  return Own(type, rows, cols, std::vector<uint8_t>(bytes, bytes + rows * RowBytes(type, cols)));
}

Weight Weight::Own(GgmlType type, int64_t rows, int64_t cols, std::vector<uint8_t> bytes) {
  auto storage = std::make_shared<std::vector<uint8_t>>(std::move(bytes));
  Weight w;
  w.type = type;
  w.rows = rows;
  w.cols = cols;
  w.data = storage->data();
  w.owner = std::move(storage);
  return w;
}

std::vector<float> Weight::ToF32() const {
  std::vector<float> out(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) DequantizeRowTo(r, out.data() + r * cols);
  return out;
}

}  // namespace sinkserve

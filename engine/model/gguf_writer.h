// GGUF v3 writer: metadata and tensors in, a file llama.cpp and gguf::Parse
// read out. The layout is the one engine/model/gguf.h describes:
//   "GGUF" | u32 3 | u64 n_tensors | u64 n_kv | n_kv key/values | n_tensors infos
//   | zero padding to the alignment | tensor data, each tensor's bytes padded
//   to the alignment (so every offset, and the file size, is a multiple of it).
// `general.alignment` (u32) is always written, first, so readers need not
// assume the default.
//
// Plain data in: the writer knows nothing of a model's structure. A tensor is
// a name, ggml dims (fastest-varying first: a row-major (rows, cols) matrix is
// {cols, rows}) and fp32 values in row-major order, stored as F32 or F16
// (rounded to nearest even).
//
// The Add* calls never fail on the spot: the first mistake (a duplicate key or
// tensor name, a bad shape, a size mismatch, a reserved key) is kept, later
// calls are ignored, and Serialize/WriteFile return it. status() shows it early.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "engine/model/gguf.h"

namespace sinkserve::gguf {

class Writer {
 public:
  // ggml limits a tensor name to 63 bytes (GGML_MAX_NAME 64 with the NUL);
  // GGUF limits a key to 65535 bytes.
  static constexpr size_t kMaxTensorName = 63;
  static constexpr size_t kMaxKey = 65535;
  static constexpr uint32_t kAlignment = 32;

  Writer() = default;
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  // Metadata, written in the order added.
  void AddString(std::string_view key, std::string_view value);
  void AddUint32(std::string_view key, uint32_t value);
  void AddInt32(std::string_view key, int32_t value);
  void AddUint64(std::string_view key, uint64_t value);
  void AddFloat32(std::string_view key, float value);
  void AddBool(std::string_view key, bool value);
  void AddStringArray(std::string_view key, absl::Span<const std::string> values);
  void AddFloat32Array(std::string_view key, absl::Span<const float> values);
  void AddInt32Array(std::string_view key, absl::Span<const int32_t> values);

  // Copies `key` from a parsed file byte for byte, whatever its type (arrays
  // and nested arrays included). NOT_FOUND when `from` lacks it; other errors
  // are kept as for the Add* calls.
  absl::Status CopyValue(const File& from, std::string_view key);

  // A tensor of `type` F32 or F16 from fp32 `values` (row-major,
  // product(dims) of them). dims: 1 to 4 entries, each >= 1.
  void AddTensor(std::string_view name, std::vector<uint64_t> dims, TensorType type,
                 absl::Span<const float> values);

  // The first error kept so far, or OK.
  const absl::Status& status() const { return status_; }
  size_t tensor_count() const { return tensors_.size(); }
  // Bytes the whole file will take.
  uint64_t FileSize() const;

  // The whole file in memory.
  absl::StatusOr<std::string> Serialize() const;
  // Streams the file to `path` through `path`.tmp and a rename, so a reader
  // never sees half a file; the temporary is removed on failure.
  absl::Status WriteFile(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    std::vector<uint64_t> dims;
    TensorType type;
    uint64_t offset;    // in the data section, a multiple of kAlignment
    std::string bytes;  // the encoded data, unpadded
  };

  // Records the first error; false when one is already recorded.
  bool Fail(absl::Status s);
  // Checks `key` and appends its (key, u32 type, value) record.
  void AddRecord(std::string_view key, ValueType type, std::string_view value_bytes);
  // Everything before the data section, padding included.
  std::string Header() const;

  absl::Status status_;
  std::vector<std::string> records_;  // encoded key/value records, in order
  absl::flat_hash_set<std::string> keys_;
  std::vector<Tensor> tensors_;
  absl::flat_hash_set<std::string> tensor_names_;
  uint64_t data_size_ = 0;  // the data section's size, padding included
};

}  // namespace sinkserve::gguf

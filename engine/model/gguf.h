// GGUF v2/v3 container parser over a byte span, hardened for hostile input.
//
// File layout (little-endian):
//   "GGUF" | u32 version | u64 n_tensors | u64 n_kv
//   n_kv      x { string key | u32 value_type | value }
//   n_tensors x { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset }
//   padding to `general.alignment` (default 32)
//   data section: each tensor at data_offset + offset
// where string = u64 length + bytes (no terminator), and an array value is
// u32 element_type | u64 count | elements (arrays may nest).
//
// Parse() checks every length, count, offset and size against the span with
// overflow-safe arithmetic before touching or allocating for it, so a lying
// file yields an INVALID_ARGUMENT / DATA_LOSS status naming what is wrong and
// at which byte offset. The parsed File keeps a view into the bytes: they must
// outlive it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "engine/model/model.h"
#include "engine/model/quant.h"
#include "engine/model/vocab.h"

namespace sinkserve::gguf {

// GGUF metadata value types, numbered as in the spec.
enum class ValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};
std::string_view ValueTypeName(ValueType type);

// ggml tensor types (engine/model/quant.h).
using TensorType = GgmlType;
// "F32", "Q4_K", ... or "type <n>" for numbers we do not know.
std::string TensorTypeName(uint32_t type);

// An array value, kept as a checked reference into the file and decoded on
// demand (File::ArrayItems, the typed getters), so a 50k-entry token list
// costs nothing until asked for. Parse() has already walked every element,
// nested arrays included, so decoding cannot read out of bounds.
struct ArrayRef {
  ValueType elem_type = ValueType::kUint8;
  uint64_t count = 0;
  uint64_t offset = 0;   // file offset of the first element
  uint64_t n_bytes = 0;  // encoded size of all elements
};

// One metadata value. Unsigned integers are held as uint64_t, signed ones as
// int64_t, floats as double; `type` keeps the exact GGUF type.
struct Value {
  ValueType type = ValueType::kUint8;
  std::variant<uint64_t, int64_t, double, bool, std::string, ArrayRef> data;
};

struct TensorInfo {
  std::string name;
  std::vector<uint64_t> dims;  // ggml ne[], fastest-varying first: ne=[cols, rows]
  uint32_t type = 0;           // ggml type number (TensorType when known)
  uint64_t offset = 0;         // relative to the data section; aligned
  uint64_t n_elements = 0;     // product of dims
  uint64_t n_bytes = 0;        // size in the file for `type`
  uint64_t info_offset = 0;    // file offset of this tensor-info record (for errors)
};

struct File {
  uint32_t version = 0;
  uint64_t alignment = 32;
  uint64_t data_offset = 0;    // absolute file offset of the data section
  std::vector<std::pair<std::string, Value>> metadata;  // file order
  std::vector<TensorInfo> tensors;                      // file order
  std::string_view bytes;      // the whole file (not owned)

  const Value* Find(std::string_view key) const;
  const TensorInfo* FindTensor(std::string_view name) const;

  // Typed metadata getters: NOT_FOUND when absent, INVALID_ARGUMENT when the
  // value has the wrong type or does not fit the requested type.
  absl::StatusOr<std::string> GetString(std::string_view key) const;
  absl::StatusOr<int64_t> GetInt(std::string_view key) const;  // any integer type
  absl::StatusOr<double> GetFloat(std::string_view key) const;  // any numeric type
  absl::StatusOr<bool> GetBool(std::string_view key) const;
  absl::StatusOr<std::vector<std::string>> GetStringArray(std::string_view key) const;
  absl::StatusOr<std::vector<float>> GetFloatArray(std::string_view key) const;
  absl::StatusOr<std::vector<int64_t>> GetIntArray(std::string_view key) const;

  // One level of an array value's elements (elements that are arrays come
  // back as ArrayRef values). INVALID_ARGUMENT when `value` is not an array.
  absl::StatusOr<std::vector<Value>> ArrayItems(const Value& value) const;

  // The tensor's data converted to fp32, in file order: (ne[n-1], ..., ne[0])
  // row-major. Every IsWeightType type is supported; others are
  // UNIMPLEMENTED naming the type.
  absl::StatusOr<std::vector<float>> ReadTensorF32(const TensorInfo& tensor) const;
  // A 2-D tensor (ne = [cols, rows]) as a Weight in its own type. With
  // `storage` (what keeps `bytes` alive) the weight points into the file;
  // without, it holds a copy.
  absl::StatusOr<Weight> ReadWeight(const TensorInfo& tensor, const std::shared_ptr<const void>& storage) const;
  // The tensor's data in the file, checked (range, size for its type, a
  // type weights may have).
  absl::StatusOr<const uint8_t*> WeightBytes(const TensorInfo& tensor) const;

  absl::flat_hash_map<std::string, size_t> key_index;     // key -> metadata index
  absl::flat_hash_map<std::string, size_t> tensor_index;  // name -> tensors index
};

// Parses the header, metadata and tensor infos and checks every tensor's data
// range against the span. Does not convert tensor data.
absl::StatusOr<File> Parse(std::string_view bytes);

// Architectures `llama`, `qwen2` and `mpt` to a Model: config from `<arch>.*`,
// matrices in their file types (pointing into the file when `storage` keeps
// its bytes alive, else copied), norms and biases as fp32, every tensor's
// shape checked against the config; vocab and chat template when the file
// has `tokenizer.ggml.*`.
absl::StatusOr<Model> ModelFromGguf(const File& file, const std::shared_ptr<const void>& storage = nullptr);

// The `tokenizer.ggml.*` vocabulary (a vocab-only GGUF is fine). NOT_FOUND
// when the file has no tokenizer.ggml.model.
absl::StatusOr<Vocab> VocabFromGguf(const File& file);

}  // namespace sinkserve::gguf

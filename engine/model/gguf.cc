// GGUF container parsing and tensor conversion. See gguf.h for the layout.
//
// Every read goes through Reader, which checks the remaining length before it
// copies a byte; counts are checked against the bytes left (each element has
// a minimum encoded size) before anything is reserved; sizes are multiplied
// with overflow checks. Truncation is DATA_LOSS, a bad value INVALID_ARGUMENT.
#include "engine/model/gguf.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/status_macros.h"

namespace sinkserve::gguf {
namespace {

static_assert(std::endian::native == std::endian::little,
              "the GGUF reader copies little-endian fields directly");

// This absl build has its own string_view; StrCat and heterogeneous map
// lookups need one.
absl::string_view AsAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// A name as quoted in an error message: a hostile file may use a huge key.
std::string Clip(std::string_view s) {
  return s.size() <= 80 ? std::string(s) : absl::StrCat(AsAbsl(s.substr(0, 80)), "...");
}

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr int kMaxDims = 4;              // GGML_MAX_DIMS
constexpr int kMaxArrayDepth = 8;        // nested arrays deeper than this are refused
constexpr uint64_t kDefaultAlignment = 32;
constexpr uint64_t kMaxAlignment = uint64_t{1} << 30;

// a * b, false on uint64 overflow.
bool MulOk(uint64_t a, uint64_t b, uint64_t* out) { return !__builtin_mul_overflow(a, b, out); }
bool AddOk(uint64_t a, uint64_t b, uint64_t* out) { return !__builtin_add_overflow(a, b, out); }

// Bounds-checked little-endian cursor over the file.
class Reader {
 public:
  Reader(std::string_view bytes, uint64_t pos) : bytes_(bytes), pos_(pos) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return pos_ <= bytes_.size() ? bytes_.size() - pos_ : 0; }

  absl::Status Need(uint64_t n, std::string_view what) const {
    if (n <= remaining()) return absl::OkStatus();
    return absl::DataLossError(absl::StrFormat(
        "GGUF truncated: %s at offset %d needs %d bytes, only %d remain (file size %d)", what,
        pos_, n, remaining(), bytes_.size()));
  }

  absl::Status Skip(uint64_t n, std::string_view what) {
    RETURN_IF_ERROR(Need(n, what));
    pos_ += n;
    return absl::OkStatus();
  }

  template <typename T>
  absl::StatusOr<T> Read(std::string_view what) {
    RETURN_IF_ERROR(Need(sizeof(T), what));
    T v;
    std::memcpy(&v, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  // u64 length + bytes. The length is checked against the bytes left before
  // anything is allocated.
  absl::StatusOr<std::string_view> ReadStringView(std::string_view what) {
    const uint64_t at = pos_;
    ASSIGN_OR_RETURN(uint64_t len, Read<uint64_t>(what));
    if (len > remaining()) {
      return absl::DataLossError(absl::StrFormat(
          "GGUF: %s at offset %d has length %d but only %d bytes remain (file size %d)", what, at,
          len, remaining(), bytes_.size()));
    }
    std::string_view s = bytes_.substr(pos_, len);
    pos_ += len;
    return s;
  }

 private:
  std::string_view bytes_;
  uint64_t pos_;
};

bool IsValidValueType(uint32_t t) { return t <= static_cast<uint32_t>(ValueType::kFloat64); }

// Encoded size of a fixed-size scalar; 0 for string and array.
uint64_t ScalarSize(ValueType t) {
  switch (t) {
    case ValueType::kUint8:
    case ValueType::kInt8:
    case ValueType::kBool:
      return 1;
    case ValueType::kUint16:
    case ValueType::kInt16:
      return 2;
    case ValueType::kUint32:
    case ValueType::kInt32:
    case ValueType::kFloat32:
      return 4;
    case ValueType::kUint64:
    case ValueType::kInt64:
    case ValueType::kFloat64:
      return 8;
    case ValueType::kString:
    case ValueType::kArray:
      return 0;
  }
  return 0;
}

// The fewest bytes one element of type t can occupy (used to cap counts).
uint64_t MinEncodedSize(ValueType t) {
  if (t == ValueType::kString) return 8;  // u64 length
  if (t == ValueType::kArray) return 12;  // u32 type + u64 count
  return ScalarSize(t);
}

// Reads one scalar or string of type t (not an array).
absl::StatusOr<Value> ReadScalar(Reader& r, ValueType t, std::string_view what) {
  Value v;
  v.type = t;
  switch (t) {
    case ValueType::kUint8: { ASSIGN_OR_RETURN(uint8_t x, r.Read<uint8_t>(what)); v.data = uint64_t{x}; break; }
    case ValueType::kInt8: { ASSIGN_OR_RETURN(int8_t x, r.Read<int8_t>(what)); v.data = int64_t{x}; break; }
    case ValueType::kUint16: { ASSIGN_OR_RETURN(uint16_t x, r.Read<uint16_t>(what)); v.data = uint64_t{x}; break; }
    case ValueType::kInt16: { ASSIGN_OR_RETURN(int16_t x, r.Read<int16_t>(what)); v.data = int64_t{x}; break; }
    case ValueType::kUint32: { ASSIGN_OR_RETURN(uint32_t x, r.Read<uint32_t>(what)); v.data = uint64_t{x}; break; }
    case ValueType::kInt32: { ASSIGN_OR_RETURN(int32_t x, r.Read<int32_t>(what)); v.data = int64_t{x}; break; }
    case ValueType::kUint64: { ASSIGN_OR_RETURN(uint64_t x, r.Read<uint64_t>(what)); v.data = x; break; }
    case ValueType::kInt64: { ASSIGN_OR_RETURN(int64_t x, r.Read<int64_t>(what)); v.data = x; break; }
    case ValueType::kFloat32: { ASSIGN_OR_RETURN(float x, r.Read<float>(what)); v.data = double{x}; break; }
    case ValueType::kFloat64: { ASSIGN_OR_RETURN(double x, r.Read<double>(what)); v.data = x; break; }
    case ValueType::kBool: {
      const uint64_t at = r.pos();
      ASSIGN_OR_RETURN(uint8_t x, r.Read<uint8_t>(what));
      if (x > 1) {
        return absl::InvalidArgumentError(
            absl::StrFormat("GGUF: %s at offset %d: bool byte is %d, not 0 or 1", what, at, x));
      }
      v.data = x == 1;
      break;
    }
    case ValueType::kString: {
      ASSIGN_OR_RETURN(std::string_view s, r.ReadStringView(what));
      v.data = std::string(s);
      break;
    }
    case ValueType::kArray:
      return absl::InternalError("ReadScalar called on an array");
  }
  return v;
}

// Reads an array header and walks (validates) its elements without decoding
// them. `depth` counts enclosing arrays.
absl::StatusOr<ArrayRef> WalkArray(Reader& r, int depth, std::string_view what) {
  if (depth >= kMaxArrayDepth) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "GGUF: %s at offset %d: arrays nested deeper than %d", what, r.pos(), kMaxArrayDepth));
  }
  const uint64_t at = r.pos();
  ASSIGN_OR_RETURN(uint32_t elem, r.Read<uint32_t>(what));
  if (!IsValidValueType(elem)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("GGUF: %s at offset %d: unknown array element type %d", what, at, elem));
  }
  ArrayRef a;
  a.elem_type = static_cast<ValueType>(elem);
  const uint64_t count_at = r.pos();
  ASSIGN_OR_RETURN(a.count, r.Read<uint64_t>(what));
  const uint64_t min_size = MinEncodedSize(a.elem_type);
  if (a.count > r.remaining() / min_size) {
    return absl::DataLossError(absl::StrFormat(
        "GGUF: %s at offset %d: array of %d %s elements needs at least %d bytes each, only %d "
        "bytes remain",
        what, count_at, a.count, ValueTypeName(a.elem_type), min_size, r.remaining()));
  }
  a.offset = r.pos();
  if (a.elem_type == ValueType::kString) {
    for (uint64_t i = 0; i < a.count; ++i) {
      RETURN_IF_ERROR(r.ReadStringView(what).status());
    }
  } else if (a.elem_type == ValueType::kArray) {
    for (uint64_t i = 0; i < a.count; ++i) {
      RETURN_IF_ERROR(WalkArray(r, depth + 1, what).status());
    }
  } else if (a.elem_type == ValueType::kBool) {
    for (uint64_t i = 0; i < a.count; ++i) {
      RETURN_IF_ERROR(ReadScalar(r, ValueType::kBool, what).status());
    }
  } else {
    RETURN_IF_ERROR(r.Skip(a.count * min_size, what));  // count <= remaining / min_size
  }
  a.n_bytes = r.pos() - a.offset;
  return a;
}

absl::StatusOr<Value> ReadValue(Reader& r, ValueType t, std::string_view what) {
  if (t != ValueType::kArray) return ReadScalar(r, t, what);
  Value v;
  v.type = ValueType::kArray;
  ASSIGN_OR_RETURN(v.data, WalkArray(r, 0, what));
  return v;
}

absl::StatusOr<TensorInfo> ReadTensorInfo(Reader& r, uint64_t index) {
  TensorInfo t;
  t.info_offset = r.pos();
  const std::string what = absl::StrCat("tensor info #", index);
  ASSIGN_OR_RETURN(std::string_view name, r.ReadStringView(what + " name"));
  t.name = std::string(name);
  const std::string label = absl::StrCat("tensor '", Clip(t.name), "'");
  const uint64_t dims_at = r.pos();
  ASSIGN_OR_RETURN(uint32_t n_dims, r.Read<uint32_t>(label + " n_dims"));
  if (n_dims > kMaxDims) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "GGUF: %s at offset %d has %d dimensions, at most %d allowed", label, dims_at, n_dims,
        kMaxDims));
  }
  t.n_elements = 1;
  for (uint32_t d = 0; d < n_dims; ++d) {
    const uint64_t at = r.pos();
    ASSIGN_OR_RETURN(uint64_t ne, r.Read<uint64_t>(label + " dimension"));
    if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        !MulOk(t.n_elements, ne, &t.n_elements) ||
        t.n_elements > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "GGUF: %s dimension %d at offset %d (%d) makes the element count overflow int64",
          label, d, at, ne));
    }
    t.dims.push_back(ne);
  }
  const uint64_t type_at = r.pos();
  ASSIGN_OR_RETURN(t.type, r.Read<uint32_t>(label + " type"));
  const GgmlTypeTraits* traits = FindGgmlType(t.type);
  if (traits == nullptr) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "GGUF: %s at offset %d has unknown ggml type %d", label, type_at, t.type));
  }
  const uint64_t row = t.dims.empty() ? 1 : t.dims[0];
  if (row % static_cast<uint64_t>(traits->block) != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "GGUF: %s of type %s has ne[0]=%d, not a multiple of its block size %d", label,
        traits->name, row, static_cast<uint64_t>(traits->block)));
  }
  // n_elements is a multiple of block because ne[0] is.
  if (!MulOk(t.n_elements / static_cast<uint64_t>(traits->block), static_cast<uint64_t>(traits->block_bytes), &t.n_bytes)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("GGUF: %s byte size overflows uint64", label));
  }
  ASSIGN_OR_RETURN(t.offset, r.Read<uint64_t>(label + " data offset"));
  return t;
}

// The checked key/value section. Fills file->metadata and key_index.
absl::Status ReadMetadata(Reader& r, uint64_t n_kv, File* file) {
  for (uint64_t i = 0; i < n_kv; ++i) {
    const uint64_t at = r.pos();
    ASSIGN_OR_RETURN(std::string_view key, r.ReadStringView(absl::StrCat("metadata key #", i)));
    const std::string label = absl::StrCat("metadata '", Clip(key), "'");
    const uint64_t type_at = r.pos();
    ASSIGN_OR_RETURN(uint32_t type, r.Read<uint32_t>(label + " type"));
    if (!IsValidValueType(type)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "GGUF: %s at offset %d has unknown value type %d", label, type_at, type));
    }
    ASSIGN_OR_RETURN(Value value, ReadValue(r, static_cast<ValueType>(type), label));
    if (!file->key_index.emplace(std::string(key), file->metadata.size()).second) {
      return absl::InvalidArgumentError(
          absl::StrFormat("GGUF: duplicate %s at offset %d", label, at));
    }
    file->metadata.emplace_back(std::string(key), std::move(value));
  }
  return absl::OkStatus();
}

// Reads general.alignment (if present) into file->alignment.
absl::Status ReadAlignment(File* file) {
  if (file->Find("general.alignment") == nullptr) return absl::OkStatus();
  ASSIGN_OR_RETURN(int64_t a, file->GetInt("general.alignment"));
  if (a <= 0 || static_cast<uint64_t>(a) > kMaxAlignment || (a & (a - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "GGUF: general.alignment is %d; must be a power of two in [1, %d]", a, kMaxAlignment));
  }
  file->alignment = static_cast<uint64_t>(a);
  return absl::OkStatus();
}

// Checks every tensor's data range: aligned, inside the data section, and not
// overlapping another (so converting all tensors costs at most a small
// multiple of the file size, whatever the infos claim).
absl::Status CheckTensorRanges(const File& file) {
  const uint64_t data_size = file.bytes.size() - file.data_offset;
  std::vector<const TensorInfo*> by_offset;
  by_offset.reserve(file.tensors.size());
  for (const TensorInfo& t : file.tensors) {
    if (t.offset % file.alignment != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "GGUF: tensor '%s' (info at offset %d) has data offset %d, not a multiple of the "
          "alignment %d",
          Clip(t.name), t.info_offset, t.offset, file.alignment));
    }
    if (t.offset > data_size || t.n_bytes > data_size - t.offset) {
      return absl::DataLossError(absl::StrFormat(
          "GGUF: tensor '%s' (info at offset %d) data [%d, +%d) relative to the data section at "
          "%d runs past the end of the file (data section is %d bytes)",
          Clip(t.name), t.info_offset, t.offset, t.n_bytes, file.data_offset, data_size));
    }
    by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo& prev = *by_offset[i - 1];
    if (prev.offset + prev.n_bytes > by_offset[i]->offset) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "GGUF: tensor '%s' data [%d, +%d) overlaps tensor '%s' at %d",
          Clip(prev.name), prev.offset,
          prev.n_bytes, Clip(by_offset[i]->name), by_offset[i]->offset));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string_view ValueTypeName(ValueType type) {
  switch (type) {
    case ValueType::kUint8: return "uint8";
    case ValueType::kInt8: return "int8";
    case ValueType::kUint16: return "uint16";
    case ValueType::kInt16: return "int16";
    case ValueType::kUint32: return "uint32";
    case ValueType::kInt32: return "int32";
    case ValueType::kFloat32: return "float32";
    case ValueType::kBool: return "bool";
    case ValueType::kString: return "string";
    case ValueType::kArray: return "array";
    case ValueType::kUint64: return "uint64";
    case ValueType::kInt64: return "int64";
    case ValueType::kFloat64: return "float64";
  }
  return "unknown";
}

std::string TensorTypeName(uint32_t type) { return GgmlTypeName(type); }

absl::StatusOr<File> Parse(std::string_view bytes) {
  File file;
  file.bytes = bytes;
  file.alignment = kDefaultAlignment;
  Reader r(bytes, 0);
  ASSIGN_OR_RETURN(uint32_t magic, r.Read<uint32_t>("magic"));
  if (magic != kMagic) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "not a GGUF file: magic at offset 0 is 0x%08x, expected 0x%08x (\"GGUF\")", magic, kMagic));
  }
  ASSIGN_OR_RETURN(file.version, r.Read<uint32_t>("version"));
  if (file.version != 2 && file.version != 3) {
    if (file.version == 0x02000000 || file.version == 0x03000000) {
      return absl::UnimplementedError("GGUF: big-endian files are not supported");
    }
    return absl::InvalidArgumentError(absl::StrFormat(
        "GGUF: version %d at offset 4 is not supported (only 2 and 3)", file.version));
  }
  ASSIGN_OR_RETURN(uint64_t n_tensors, r.Read<uint64_t>("tensor count"));
  ASSIGN_OR_RETURN(uint64_t n_kv, r.Read<uint64_t>("metadata count"));
  // Each key/value takes >= 13 bytes (u64 key length, u32 type, 1-byte value)
  // and each tensor info >= 24 (u64 name length, u32 n_dims, u32 type, u64 offset).
  constexpr uint64_t kMinKv = 13, kMinTensorInfo = 24;
  if (n_kv > r.remaining() / kMinKv) {
    return absl::DataLossError(absl::StrFormat(
        "GGUF: metadata count %d at offset 16 cannot fit in the %d bytes that remain", n_kv,
        r.remaining()));
  }
  if (n_tensors > r.remaining() / kMinTensorInfo) {
    return absl::DataLossError(absl::StrFormat(
        "GGUF: tensor count %d at offset 8 cannot fit in the %d bytes that remain", n_tensors,
        r.remaining()));
  }
  RETURN_IF_ERROR(ReadMetadata(r, n_kv, &file));
  RETURN_IF_ERROR(ReadAlignment(&file));

  if (n_tensors > r.remaining() / kMinTensorInfo) {
    return absl::DataLossError(absl::StrFormat(
        "GGUF: %d tensor infos cannot fit in the %d bytes left at offset %d", n_tensors,
        r.remaining(), r.pos()));
  }
  file.tensors.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    ASSIGN_OR_RETURN(TensorInfo t, ReadTensorInfo(r, i));
    if (!file.tensor_index.emplace(t.name, file.tensors.size()).second) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "GGUF: duplicate tensor name '%s' at offset %d", Clip(t.name), t.info_offset));
    }
    file.tensors.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment.
  const uint64_t end = r.pos();
  uint64_t padded;
  if (!AddOk(end, file.alignment - 1, &padded)) {
    return absl::InvalidArgumentError("GGUF: data section offset overflows");
  }
  file.data_offset = padded / file.alignment * file.alignment;
  if (!file.tensors.empty()) {
    if (file.data_offset > bytes.size()) {
      return absl::DataLossError(absl::StrFormat(
          "GGUF: data section should start at offset %d (tensor infos end at %d, alignment %d) "
          "but the file is only %d bytes",
          file.data_offset, end, file.alignment, bytes.size()));
    }
    RETURN_IF_ERROR(CheckTensorRanges(file));
  } else {
    file.data_offset = std::min<uint64_t>(file.data_offset, bytes.size());
  }
  return file;
}

const Value* File::Find(std::string_view key) const {
  auto it = key_index.find(AsAbsl(key));
  return it == key_index.end() ? nullptr : &metadata[it->second].second;
}

const TensorInfo* File::FindTensor(std::string_view name) const {
  auto it = tensor_index.find(AsAbsl(name));
  return it == tensor_index.end() ? nullptr : &tensors[it->second];
}

namespace {

absl::Status WrongType(std::string_view key, const Value& v, std::string_view wanted) {
  return absl::InvalidArgumentError(absl::StrFormat("GGUF: metadata '%s' is %s, expected %s",
                                                    key, ValueTypeName(v.type), wanted));
}

absl::Status Missing(std::string_view key) {
  return absl::NotFoundError(absl::StrFormat("GGUF: metadata '%s' is missing", key));
}

bool IsInteger(ValueType t) {
  return t == ValueType::kUint8 || t == ValueType::kInt8 || t == ValueType::kUint16 ||
         t == ValueType::kInt16 || t == ValueType::kUint32 || t == ValueType::kInt32 ||
         t == ValueType::kUint64 || t == ValueType::kInt64;
}

// An integer Value as int64; false when it does not fit.
bool AsInt64(const Value& v, int64_t* out) {
  if (const auto* u = std::get_if<uint64_t>(&v.data)) {
    if (*u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
    *out = static_cast<int64_t>(*u);
    return true;
  }
  if (const auto* i = std::get_if<int64_t>(&v.data)) {
    *out = *i;
    return true;
  }
  return false;
}

}  // namespace

absl::StatusOr<std::string> File::GetString(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return Missing(key);
  if (v->type != ValueType::kString) return WrongType(key, *v, "string");
  return std::get<std::string>(v->data);
}

absl::StatusOr<int64_t> File::GetInt(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return Missing(key);
  int64_t out;
  if (!IsInteger(v->type)) return WrongType(key, *v, "an integer");
  if (!AsInt64(*v, &out)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("GGUF: metadata '%s' (%d) does not fit int64", key,
                        std::get<uint64_t>(v->data)));
  }
  return out;
}

absl::StatusOr<double> File::GetFloat(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return Missing(key);
  if (const auto* d = std::get_if<double>(&v->data)) return *d;
  if (const auto* u = std::get_if<uint64_t>(&v->data)) return static_cast<double>(*u);
  if (const auto* i = std::get_if<int64_t>(&v->data)) return static_cast<double>(*i);
  return WrongType(key, *v, "a number");
}

absl::StatusOr<bool> File::GetBool(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return Missing(key);
  if (v->type != ValueType::kBool) return WrongType(key, *v, "bool");
  return std::get<bool>(v->data);
}

absl::StatusOr<std::vector<Value>> File::ArrayItems(const Value& value) const {
  const auto* a = std::get_if<ArrayRef>(&value.data);
  if (a == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("GGUF: value is ", AsAbsl(ValueTypeName(value.type)), ", not an array"));
  }
  // Parse() already walked this range, so count is bounded by its bytes.
  std::vector<Value> items;
  items.reserve(a->count);
  Reader r(bytes.substr(0, a->offset + a->n_bytes), a->offset);
  for (uint64_t i = 0; i < a->count; ++i) {
    if (a->elem_type == ValueType::kArray) {
      Value v;
      v.type = ValueType::kArray;
      ASSIGN_OR_RETURN(v.data, WalkArray(r, 1, "array element"));
      items.push_back(std::move(v));
    } else {
      ASSIGN_OR_RETURN(Value v, ReadScalar(r, a->elem_type, "array element"));
      items.push_back(std::move(v));
    }
  }
  return items;
}

namespace {

// The array under `key` with its element type checked by `ok_elem`.
absl::StatusOr<const ArrayRef*> FindArray(const File& f, std::string_view key,
                                          bool (*ok_elem)(ValueType), std::string_view wanted) {
  const Value* v = f.Find(key);
  if (v == nullptr) return Missing(key);
  const auto* a = std::get_if<ArrayRef>(&v->data);
  if (a == nullptr || !ok_elem(a->elem_type)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "GGUF: metadata '%s' is %s%s, expected an array of %s", key, ValueTypeName(v->type),
        a ? absl::StrCat(" of ", AsAbsl(ValueTypeName(a->elem_type))) : "", wanted));
  }
  return a;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> File::GetStringArray(std::string_view key) const {
  ASSIGN_OR_RETURN(const ArrayRef* a,
                   FindArray(*this, key, [](ValueType t) { return t == ValueType::kString; },
                             "string"));
  std::vector<std::string> out;
  out.reserve(a->count);  // each element used >= 8 bytes of the file
  Reader r(bytes.substr(0, a->offset + a->n_bytes), a->offset);
  for (uint64_t i = 0; i < a->count; ++i) {
    ASSIGN_OR_RETURN(std::string_view s, r.ReadStringView(key));
    out.emplace_back(s);
  }
  return out;
}

absl::StatusOr<std::vector<float>> File::GetFloatArray(std::string_view key) const {
  ASSIGN_OR_RETURN(const ArrayRef* a,
                   FindArray(
                       *this, key,
                       [](ValueType t) {
                         return t == ValueType::kFloat32 || t == ValueType::kFloat64;
                       },
                       "float32 or float64"));
  std::vector<float> out;
  out.reserve(a->count);
  Reader r(bytes.substr(0, a->offset + a->n_bytes), a->offset);
  for (uint64_t i = 0; i < a->count; ++i) {
    ASSIGN_OR_RETURN(Value v, ReadScalar(r, a->elem_type, key));
    out.push_back(static_cast<float>(std::get<double>(v.data)));
  }
  return out;
}

absl::StatusOr<std::vector<int64_t>> File::GetIntArray(std::string_view key) const {
  ASSIGN_OR_RETURN(const ArrayRef* a, FindArray(*this, key, IsInteger, "integers"));
  std::vector<int64_t> out;
  out.reserve(a->count);
  Reader r(bytes.substr(0, a->offset + a->n_bytes), a->offset);
  for (uint64_t i = 0; i < a->count; ++i) {
    ASSIGN_OR_RETURN(Value v, ReadScalar(r, a->elem_type, key));
    int64_t x;
    if (!AsInt64(v, &x)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("GGUF: metadata '%s' element %d does not fit int64", key, i));
    }
    out.push_back(x);
  }
  return out;
}

// The tensor's bytes, after checking its range against the file, its size
// against its type, and that the type is one a weight may have.
absl::StatusOr<const uint8_t*> File::WeightBytes(const TensorInfo& t) const {
  // Re-check the range: a File may have been built or edited by hand.
  uint64_t begin, end;
  if (data_offset > bytes.size() || !AddOk(data_offset, t.offset, &begin) ||
      !AddOk(begin, t.n_bytes, &end) || end > bytes.size()) {
    return absl::DataLossError(
        absl::StrFormat("GGUF: tensor '%s' data runs past the end of the file", Clip(t.name)));
  }
  const GgmlTypeTraits* traits = FindGgmlType(t.type);
  const uint64_t block = traits == nullptr ? 1 : static_cast<uint64_t>(traits->block);
  if (traits == nullptr || t.n_elements % block != 0 || (!t.dims.empty() && t.dims[0] % block != 0) ||
      t.n_bytes != t.n_elements / block * static_cast<uint64_t>(traits->block_bytes)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("GGUF: tensor '%s' has an inconsistent type/size", Clip(t.name)));
  }
  if (!IsWeightType(static_cast<GgmlType>(t.type))) {
    return absl::UnimplementedError(absl::StrFormat(
        "GGUF: tensor '%s' has type %s, which is not supported (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, "
        "Q4_K, Q5_K and Q6_K are)",
        Clip(t.name), TensorTypeName(t.type)));
  }
  return reinterpret_cast<const uint8_t*>(bytes.data() + begin);
}

absl::StatusOr<std::vector<float>> File::ReadTensorF32(const TensorInfo& t) const {
  ASSIGN_OR_RETURN(const uint8_t* src, WeightBytes(t));
  std::vector<float> out(t.n_elements);  // <= 4x the tensor's bytes in the file (8x for Q4)
  if (out.empty()) return out;           // a zero-sized dim: nothing to convert
  DequantizeRow(static_cast<GgmlType>(t.type), src, out.data(), static_cast<int64_t>(t.n_elements));
  return out;
}

absl::StatusOr<Weight> File::ReadWeight(const TensorInfo& t, const std::shared_ptr<const void>& storage) const {
  if (t.dims.empty() || t.dims.size() > 2) {
    return absl::InvalidArgumentError(absl::StrFormat("GGUF: tensor '%s' is not a matrix", Clip(t.name)));
  }
  ASSIGN_OR_RETURN(const uint8_t* src, WeightBytes(t));
  const auto type = static_cast<GgmlType>(t.type);
  const int64_t cols = static_cast<int64_t>(t.dims[0]);
  const int64_t rows = t.dims.size() == 2 ? static_cast<int64_t>(t.dims[1]) : 1;
  if (storage == nullptr) return Weight::Copy(type, rows, cols, src);
  Weight w;
  w.type = type;
  w.rows = rows;
  w.cols = cols;
  w.data = src;
  w.owner = storage;
  return w;
}

}  // namespace sinkserve::gguf

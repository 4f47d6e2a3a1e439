// GGUF v3 writer. See gguf_writer.h for the layout and the error model.
#include "engine/model/gguf_writer.h"

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/status_macros.h"

namespace sinkserve::gguf {
namespace {

static_assert(std::endian::native == std::endian::little,
              "the GGUF writer copies little-endian fields directly");

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" as a little-endian u32
constexpr uint32_t kVersion = 3;
constexpr size_t kMaxDims = 4;  // GGML_MAX_DIMS

absl::string_view AsAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// A name as quoted in an error message.
std::string Clip(std::string_view s) {
  return s.size() <= 80 ? std::string(s) : absl::StrCat(AsAbsl(s.substr(0, 80)), "...");
}

template <typename T>
void Put(std::string* out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out->append(b, sizeof(T));
}

void PutString(std::string* out, std::string_view s) {
  Put<uint64_t>(out, s.size());
  out->append(s.data(), s.size());
}

uint64_t PadTo(uint64_t n, uint64_t alignment) { return (n + alignment - 1) / alignment * alignment; }

// A parsed scalar value re-encoded in its exact GGUF type.
absl::StatusOr<std::string> EncodeScalar(const Value& v) {
  std::string out;
  switch (v.type) {
    case ValueType::kUint8: Put<uint8_t>(&out, static_cast<uint8_t>(std::get<uint64_t>(v.data))); break;
    case ValueType::kUint16: Put<uint16_t>(&out, static_cast<uint16_t>(std::get<uint64_t>(v.data))); break;
    case ValueType::kUint32: Put<uint32_t>(&out, static_cast<uint32_t>(std::get<uint64_t>(v.data))); break;
    case ValueType::kUint64: Put<uint64_t>(&out, std::get<uint64_t>(v.data)); break;
    case ValueType::kInt8: Put<int8_t>(&out, static_cast<int8_t>(std::get<int64_t>(v.data))); break;
    case ValueType::kInt16: Put<int16_t>(&out, static_cast<int16_t>(std::get<int64_t>(v.data))); break;
    case ValueType::kInt32: Put<int32_t>(&out, static_cast<int32_t>(std::get<int64_t>(v.data))); break;
    case ValueType::kInt64: Put<int64_t>(&out, std::get<int64_t>(v.data)); break;
    case ValueType::kFloat32: Put<float>(&out, static_cast<float>(std::get<double>(v.data))); break;
    case ValueType::kFloat64: Put<double>(&out, std::get<double>(v.data)); break;
    case ValueType::kBool: Put<uint8_t>(&out, std::get<bool>(v.data) ? 1 : 0); break;
    case ValueType::kString: PutString(&out, std::get<std::string>(v.data)); break;
    case ValueType::kArray: return absl::InternalError("EncodeScalar called on an array");
  }
  return out;
}

}  // namespace

bool Writer::Fail(absl::Status s) {
  if (!status_.ok()) return false;
  status_ = std::move(s);
  return true;
}

void Writer::AddRecord(std::string_view key, ValueType type, std::string_view value_bytes) {
  if (!status_.ok()) return;
  if (key.empty() || key.size() > kMaxKey) {
    Fail(absl::InvalidArgumentError(absl::StrFormat(
        "GGUF writer: metadata key '%s' has %d bytes; must be 1 to %d", Clip(key), key.size(), kMaxKey)));
    return;
  }
  if (key == "general.alignment") {
    Fail(absl::InvalidArgumentError("GGUF writer: general.alignment is written by the writer itself"));
    return;
  }
  if (!keys_.insert(std::string(key)).second) {
    Fail(absl::InvalidArgumentError(absl::StrFormat("GGUF writer: duplicate metadata key '%s'", Clip(key))));
    return;
  }
  std::string record;
  record.reserve(8 + key.size() + 4 + value_bytes.size());
  PutString(&record, key);
  Put<uint32_t>(&record, static_cast<uint32_t>(type));
  record.append(value_bytes.data(), value_bytes.size());
  records_.push_back(std::move(record));
}

void Writer::AddString(std::string_view key, std::string_view value) {
  std::string v;
  PutString(&v, value);
  AddRecord(key, ValueType::kString, v);
}

void Writer::AddUint32(std::string_view key, uint32_t value) {
  std::string v;
  Put(&v, value);
  AddRecord(key, ValueType::kUint32, v);
}

void Writer::AddInt32(std::string_view key, int32_t value) {
  std::string v;
  Put(&v, value);
  AddRecord(key, ValueType::kInt32, v);
}

void Writer::AddUint64(std::string_view key, uint64_t value) {
  std::string v;
  Put(&v, value);
  AddRecord(key, ValueType::kUint64, v);
}

void Writer::AddFloat32(std::string_view key, float value) {
  std::string v;
  Put(&v, value);
  AddRecord(key, ValueType::kFloat32, v);
}

void Writer::AddBool(std::string_view key, bool value) {
  std::string v;
  Put<uint8_t>(&v, value ? 1 : 0);
  AddRecord(key, ValueType::kBool, v);
}

void Writer::AddStringArray(std::string_view key, absl::Span<const std::string> values) {
  std::string v;
  Put<uint32_t>(&v, static_cast<uint32_t>(ValueType::kString));
  Put<uint64_t>(&v, values.size());
  for (const std::string& s : values) PutString(&v, s);
  AddRecord(key, ValueType::kArray, v);
}

void Writer::AddFloat32Array(std::string_view key, absl::Span<const float> values) {
  std::string v;
  Put<uint32_t>(&v, static_cast<uint32_t>(ValueType::kFloat32));
  Put<uint64_t>(&v, values.size());
  for (float x : values) Put(&v, x);
  AddRecord(key, ValueType::kArray, v);
}

void Writer::AddInt32Array(std::string_view key, absl::Span<const int32_t> values) {
  std::string v;
  Put<uint32_t>(&v, static_cast<uint32_t>(ValueType::kInt32));
  Put<uint64_t>(&v, values.size());
  for (int32_t x : values) Put(&v, x);
  AddRecord(key, ValueType::kArray, v);
}

absl::Status Writer::CopyValue(const File& from, std::string_view key) {
  const Value* v = from.Find(key);
  if (v == nullptr) {
    return absl::NotFoundError(absl::StrFormat("GGUF writer: the source has no metadata '%s'", Clip(key)));
  }
  if (const auto* a = std::get_if<ArrayRef>(&v->data)) {
    // Parse() walked [offset, offset + n_bytes); re-check it against the
    // bytes, since a File can be edited by hand.
    if (a->offset > from.bytes.size() || a->n_bytes > from.bytes.size() - a->offset) {
      return absl::InvalidArgumentError(
          absl::StrFormat("GGUF writer: array '%s' lies outside its source file", Clip(key)));
    }
    std::string bytes;
    bytes.reserve(12 + a->n_bytes);
    Put<uint32_t>(&bytes, static_cast<uint32_t>(a->elem_type));
    Put<uint64_t>(&bytes, a->count);
    bytes.append(from.bytes.substr(a->offset, a->n_bytes));
    AddRecord(key, ValueType::kArray, bytes);
  } else {
    ASSIGN_OR_RETURN(std::string bytes, EncodeScalar(*v));
    AddRecord(key, v->type, bytes);
  }
  return status_;
}

void Writer::AddTensor(std::string_view name, std::vector<uint64_t> dims, TensorType type,
                       absl::Span<const float> values) {
  if (!status_.ok()) return;
  const std::string quoted = Clip(name);
  if (name.empty() || name.size() > kMaxTensorName) {
    Fail(absl::InvalidArgumentError(absl::StrFormat(
        "GGUF writer: tensor name '%s' has %d bytes; must be 1 to %d", quoted, name.size(), kMaxTensorName)));
    return;
  }
  if (dims.empty() || dims.size() > kMaxDims) {
    Fail(absl::InvalidArgumentError(
        absl::StrFormat("GGUF writer: tensor '%s' has %d dims; must be 1 to %d", quoted, dims.size(), kMaxDims)));
    return;
  }
  uint64_t n = 1;
  for (uint64_t d : dims) {
    if (d == 0 || __builtin_mul_overflow(n, d, &n)) {
      Fail(absl::InvalidArgumentError(absl::StrFormat(
          "GGUF writer: tensor '%s' has a zero dim or more elements than fit 64 bits", quoted)));
      return;
    }
  }
  if (n != values.size()) {
    Fail(absl::InvalidArgumentError(absl::StrFormat(
        "GGUF writer: tensor '%s' dims hold %d elements but %d values were given", quoted, n, values.size())));
    return;
  }
  if (type != TensorType::kF32 && type != TensorType::kF16) {
    Fail(absl::UnimplementedError(absl::StrFormat(
        "GGUF writer: tensor '%s': type %s is not supported (F32 and F16 are)", quoted,
        TensorTypeName(static_cast<uint32_t>(type)))));
    return;
  }
  if (!tensor_names_.insert(std::string(name)).second) {
    Fail(absl::InvalidArgumentError(absl::StrFormat("GGUF writer: duplicate tensor name '%s'", quoted)));
    return;
  }
  Tensor t;
  t.name = std::string(name);
  t.dims = std::move(dims);
  t.type = type;
  t.offset = data_size_;
  if (type == TensorType::kF32) {
    t.bytes.assign(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  } else {
    t.bytes.resize(values.size() * sizeof(uint16_t));
    for (size_t i = 0; i < values.size(); ++i) {
      const uint16_t h = FloatToHalf(values[i]);
      std::memcpy(t.bytes.data() + 2 * i, &h, 2);
    }
  }
  data_size_ += PadTo(t.bytes.size(), kAlignment);
  tensors_.push_back(std::move(t));
}

std::string Writer::Header() const {
  std::string h;
  Put<uint32_t>(&h, kMagic);
  Put<uint32_t>(&h, kVersion);
  Put<uint64_t>(&h, tensors_.size());
  Put<uint64_t>(&h, records_.size() + 1);  // + general.alignment
  PutString(&h, "general.alignment");
  Put<uint32_t>(&h, static_cast<uint32_t>(ValueType::kUint32));
  Put<uint32_t>(&h, kAlignment);
  for (const std::string& r : records_) h += r;
  for (const Tensor& t : tensors_) {
    PutString(&h, t.name);
    Put<uint32_t>(&h, static_cast<uint32_t>(t.dims.size()));
    for (uint64_t d : t.dims) Put<uint64_t>(&h, d);
    Put<uint32_t>(&h, static_cast<uint32_t>(t.type));
    Put<uint64_t>(&h, t.offset);
  }
  h.resize(PadTo(h.size(), kAlignment), '\0');
  return h;
}

uint64_t Writer::FileSize() const { return Header().size() + data_size_; }

absl::StatusOr<std::string> Writer::Serialize() const {
  if (!status_.ok()) return status_;
  std::string out = Header();
  out.reserve(out.size() + data_size_);
  for (const Tensor& t : tensors_) {
    out += t.bytes;
    out.resize(PadTo(out.size(), kAlignment), '\0');
  }
  return out;
}

absl::Status Writer::WriteFile(const std::string& path) const {
  if (!status_.ok()) return status_;
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) {
    return absl::PermissionDeniedError(
        absl::StrFormat("%s: cannot open for writing: %s", tmp, std::strerror(errno)));
  }
  static constexpr char kZeros[kAlignment] = {};
  const std::string header = Header();
  bool ok = std::fwrite(header.data(), 1, header.size(), f) == header.size();
  for (size_t i = 0; ok && i < tensors_.size(); ++i) {
    const std::string& b = tensors_[i].bytes;
    const size_t pad = PadTo(b.size(), kAlignment) - b.size();
    ok = std::fwrite(b.data(), 1, b.size(), f) == b.size() && std::fwrite(kZeros, 1, pad, f) == pad;
  }
  const int err = errno;
  ok = std::fclose(f) == 0 && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = ok ? errno : err;
    std::remove(tmp.c_str());
    return absl::UnavailableError(absl::StrFormat("%s: write failed: %s", path, std::strerror(e)));
  }
  return absl::OkStatus();
}

}  // namespace sinkserve::gguf

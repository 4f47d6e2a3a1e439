// Vocabulary file parsers: llama2.c tokenizer.bin and SentencePiece .model,
// and the optional GGUF tokenizer keys (ReadGgufVocabExtras). All treat their
// input as hostile: every length, count and varint is bounds-checked, and
// errors name the offset or key where the file went wrong.
#include <cstring>
#include <string>
#include <string_view>
#include <variant>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "engine/model/gguf.h"
#include "engine/model/model_loader.h"

namespace sinkserve {
namespace {

constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";  // U+2581

bool IsBytePiece(std::string_view piece) {
  auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f'); };
  return piece.size() == 6 && piece.substr(0, 3) == "<0x" && hex(piece[3]) && hex(piece[4]) &&
         piece[5] == '>';
}

// ---------------------------------------------------------------------------
// llama2.c tokenizer.bin:
//   int32 max_token_length
//   per token: float32 score, int32 len, len bytes (no terminator)
// The token count is not stored. The exporter wrote BOS/EOS as "\n<s>\n" and
// "\n</s>\n" and U+2581 as ' '; both are undone so the pieces match the
// SentencePiece model the file came from.

template <typename T>
T ReadLe(std::string_view bytes, size_t offset) {
  T value;
  std::memcpy(&value, bytes.data() + offset, sizeof(T));  // x86/ARM hosts are little-endian
  return value;
}

}  // namespace

absl::StatusOr<Vocab> ParseLlama2cTokenizer(std::string_view bytes, int32_t expected_size) {
  if (bytes.size() < 4) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "llama2.c tokenizer: %d bytes is too short for the max_token_length header", bytes.size()));
  }
  const int32_t max_token_length = ReadLe<int32_t>(bytes, 0);
  if (max_token_length <= 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("llama2.c tokenizer: invalid max_token_length %d", max_token_length));
  }
  Vocab vocab;
  vocab.type = VocabType::kSentencePiece;
  size_t offset = 4;
  while (offset < bytes.size()) {
    const int32_t id = vocab.size();
    if (bytes.size() - offset < 8) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "llama2.c tokenizer: token %d header truncated at offset %d (%d bytes left, need 8)", id,
          offset, bytes.size() - offset));
    }
    const float score = ReadLe<float>(bytes, offset);
    const int32_t len = ReadLe<int32_t>(bytes, offset + 4);
    offset += 8;
    if (len < 0 || static_cast<size_t>(len) > bytes.size() - offset) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "llama2.c tokenizer: token %d length %d at offset %d exceeds the %d bytes left", id, len,
          offset - 4, bytes.size() - offset));
    }
    std::string piece(bytes.substr(offset, len));
    offset += len;
    if (id == 1 && piece == "\n<s>\n") piece = "<s>";
    if (id == 2 && piece == "\n</s>\n") piece = "</s>";
    std::string restored;
    restored.reserve(piece.size());
    for (char c : piece) {
      if (c == ' ') restored.append(kSpaceMarker);
      else restored.push_back(c);
    }
    vocab.tokens.push_back(std::move(restored));
    vocab.scores.push_back(score);
  }
  if (vocab.tokens.empty()) return absl::InvalidArgumentError("llama2.c tokenizer: no tokens");
  if (expected_size >= 0 && vocab.size() != expected_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "llama2.c tokenizer: %d tokens, but the model expects %d", vocab.size(), expected_size));
  }
  // llama2.c's convention: <unk>=0, <s>=1, </s>=2.
  vocab.unk_id = vocab.size() > 0 ? 0 : -1;
  vocab.bos_id = vocab.size() > 1 ? 1 : -1;
  vocab.eos_id = vocab.size() > 2 ? 2 : -1;
  vocab.token_types.resize(vocab.tokens.size(), TokenType::kNormal);
  for (int32_t id = 0; id < vocab.size(); ++id) {
    if (id == vocab.unk_id) vocab.token_types[id] = TokenType::kUnknown;
    else if (id == vocab.bos_id || id == vocab.eos_id) vocab.token_types[id] = TokenType::kControl;
    else if (IsBytePiece(vocab.tokens[id])) vocab.token_types[id] = TokenType::kByte;
  }
  return vocab;
}

// ---------------------------------------------------------------------------
// SentencePiece ModelProto, parsed from the protobuf wire format by hand.
//   ModelProto      1: repeated SentencePiece pieces   2: TrainerSpec
//                   3: NormalizerSpec                  (others skipped)
//   SentencePiece   1: string piece  2: float score  3: enum type (default NORMAL=1)
//   TrainerSpec     40: unk_id (0)  41: bos_id (1)  42: eos_id (2)  43: pad_id (-1)
//   NormalizerSpec  3: bool add_dummy_prefix (true)

namespace {

enum WireType : uint32_t {
  kVarint = 0,
  kFixed64 = 1,
  kLengthDelimited = 2,
  kStartGroup = 3,
  kEndGroup = 4,
  kFixed32 = 5,
};

constexpr int kMaxGroupDepth = 32;

// A bounds-checked cursor over one message's bytes. `base` is the message's
// offset in the whole file, so errors can point at absolute offsets.
class WireReader {
 public:
  WireReader(std::string_view data, size_t base) : data_(data), base_(base) {}

  bool done() const { return pos_ >= data_.size(); }
  size_t offset() const { return base_ + pos_; }

  absl::Status ReadVarint(uint64_t& value) {
    value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= data_.size()) return Error("truncated varint");
      const uint8_t b = static_cast<uint8_t>(data_[pos_++]);
      if (shift == 63 && b > 1) return Error("varint overflows 64 bits");
      value |= static_cast<uint64_t>(b & 0x7F) << shift;
      if ((b & 0x80) == 0) return absl::OkStatus();
    }
    return Error("varint longer than 10 bytes");
  }

  absl::Status ReadTag(uint32_t& field, uint32_t& wire_type) {
    uint64_t tag;
    if (absl::Status s = ReadVarint(tag); !s.ok()) return s;
    field = static_cast<uint32_t>(tag >> 3);
    wire_type = static_cast<uint32_t>(tag & 7);
    if (field == 0 || (tag >> 3) > 0x1FFFFFFF) return Error(absl::StrFormat("invalid field number %d", tag >> 3));
    return absl::OkStatus();
  }

  absl::Status ReadFixed32(uint32_t& value) {
    if (data_.size() - pos_ < 4) return Error("truncated fixed32");
    std::memcpy(&value, data_.data() + pos_, 4);
    pos_ += 4;
    return absl::OkStatus();
  }

  // A length-delimited payload; `payload_offset` is its absolute offset.
  absl::Status ReadBytes(std::string_view& payload, size_t& payload_offset) {
    uint64_t len;
    if (absl::Status s = ReadVarint(len); !s.ok()) return s;
    if (len > data_.size() - pos_) {
      return Error(absl::StrFormat("length %d exceeds the %d bytes left", len, data_.size() - pos_));
    }
    payload_offset = offset();
    payload = data_.substr(pos_, len);
    pos_ += len;
    return absl::OkStatus();
  }

  // Skips the value of a field whose tag was just read.
  absl::Status Skip(uint32_t field, uint32_t wire_type, int depth = 0) {
    switch (wire_type) {
      case kVarint: {
        uint64_t v;
        return ReadVarint(v);
      }
      case kFixed64:
        if (data_.size() - pos_ < 8) return Error("truncated fixed64");
        pos_ += 8;
        return absl::OkStatus();
      case kLengthDelimited: {
        std::string_view payload;
        size_t payload_offset;
        return ReadBytes(payload, payload_offset);
      }
      case kFixed32: {
        uint32_t v;
        return ReadFixed32(v);
      }
      case kStartGroup: {
        if (depth >= kMaxGroupDepth) return Error("groups nested too deeply");
        while (true) {
          if (done()) return Error(absl::StrFormat("unterminated group for field %d", field));
          uint32_t inner_field, inner_type;
          if (absl::Status s = ReadTag(inner_field, inner_type); !s.ok()) return s;
          if (inner_type == kEndGroup) {
            if (inner_field != field) return Error("mismatched end-group tag");
            return absl::OkStatus();
          }
          if (absl::Status s = Skip(inner_field, inner_type, depth + 1); !s.ok()) return s;
        }
      }
      case kEndGroup:
        return Error("unexpected end-group tag");
      default:
        return Error(absl::StrFormat("invalid wire type %d for field %d", wire_type, field));
    }
  }

  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrFormat("SentencePiece model: %s at offset %d", what, offset()));
  }

 private:
  std::string_view data_;
  size_t base_;
  size_t pos_ = 0;
};

absl::Status ExpectWireType(const WireReader& r, uint32_t field, uint32_t got, uint32_t want) {
  if (got == want) return absl::OkStatus();
  return r.Error(absl::StrFormat("field %d has wire type %d, expected %d", field, got, want));
}

// Reads an int32 field sent as a varint (negative values are sign-extended
// to 64 bits on the wire).
absl::Status ReadInt32(WireReader& r, uint32_t field, uint32_t wire_type, int32_t& value) {
  if (absl::Status s = ExpectWireType(r, field, wire_type, kVarint); !s.ok()) return s;
  uint64_t v;
  if (absl::Status s = r.ReadVarint(v); !s.ok()) return s;
  value = static_cast<int32_t>(static_cast<int64_t>(v));
  return absl::OkStatus();
}

absl::Status ParsePiece(std::string_view data, size_t base, Vocab& vocab) {
  WireReader r(data, base);
  std::string piece;
  float score = 0.0f;
  int32_t type = static_cast<int32_t>(TokenType::kNormal);
  while (!r.done()) {
    uint32_t field, wire_type;
    if (absl::Status s = r.ReadTag(field, wire_type); !s.ok()) return s;
    if (field == 1) {
      if (absl::Status s = ExpectWireType(r, field, wire_type, kLengthDelimited); !s.ok()) return s;
      std::string_view text;
      size_t text_offset;
      if (absl::Status s = r.ReadBytes(text, text_offset); !s.ok()) return s;
      piece.assign(text);
    } else if (field == 2) {
      if (absl::Status s = ExpectWireType(r, field, wire_type, kFixed32); !s.ok()) return s;
      uint32_t bits = 0;
      if (absl::Status s = r.ReadFixed32(bits); !s.ok()) return s;
      std::memcpy(&score, &bits, sizeof(score));
    } else if (field == 3) {
      if (absl::Status s = ReadInt32(r, field, wire_type, type); !s.ok()) return s;
      if (type < static_cast<int32_t>(TokenType::kNormal) || type > static_cast<int32_t>(TokenType::kByte)) {
        return r.Error(absl::StrFormat("piece %d has unknown type %d", vocab.size(), type));
      }
    } else if (absl::Status s = r.Skip(field, wire_type); !s.ok()) {
      return s;
    }
  }
  vocab.tokens.push_back(std::move(piece));
  vocab.scores.push_back(score);
  vocab.token_types.push_back(static_cast<TokenType>(type));  // same numbering as SentencePiece
  return absl::OkStatus();
}

absl::Status ParseTrainerSpec(std::string_view data, size_t base, Vocab& vocab) {
  WireReader r(data, base);
  while (!r.done()) {
    uint32_t field, wire_type;
    if (absl::Status s = r.ReadTag(field, wire_type); !s.ok()) return s;
    int32_t* target = field == 40 ? &vocab.unk_id
                    : field == 41 ? &vocab.bos_id
                    : field == 42 ? &vocab.eos_id
                    : field == 43 ? &vocab.pad_id
                                  : nullptr;
    if (target != nullptr) {
      if (absl::Status s = ReadInt32(r, field, wire_type, *target); !s.ok()) return s;
    } else if (absl::Status s = r.Skip(field, wire_type); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status ParseNormalizerSpec(std::string_view data, size_t base, Vocab& vocab) {
  WireReader r(data, base);
  while (!r.done()) {
    uint32_t field, wire_type;
    if (absl::Status s = r.ReadTag(field, wire_type); !s.ok()) return s;
    if (field == 3) {
      int32_t value;
      if (absl::Status s = ReadInt32(r, field, wire_type, value); !s.ok()) return s;
      vocab.add_space_prefix = value != 0;
    } else if (absl::Status s = r.Skip(field, wire_type); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Vocab> ParseSentencePieceModel(std::string_view bytes) {
  Vocab vocab;
  vocab.type = VocabType::kSentencePiece;
  vocab.unk_id = 0;  // TrainerSpec defaults
  vocab.bos_id = 1;
  vocab.eos_id = 2;
  vocab.pad_id = -1;
  vocab.add_space_prefix = true;
  WireReader r(bytes, 0);
  while (!r.done()) {
    uint32_t field, wire_type;
    if (absl::Status s = r.ReadTag(field, wire_type); !s.ok()) return s;
    if (field >= 1 && field <= 3) {
      if (absl::Status s = ExpectWireType(r, field, wire_type, kLengthDelimited); !s.ok()) return s;
      std::string_view payload;
      size_t payload_offset = 0;
      if (absl::Status s = r.ReadBytes(payload, payload_offset); !s.ok()) return s;
      absl::Status s = field == 1   ? ParsePiece(payload, payload_offset, vocab)
                       : field == 2 ? ParseTrainerSpec(payload, payload_offset, vocab)
                                    : ParseNormalizerSpec(payload, payload_offset, vocab);
      if (!s.ok()) return s;
    } else if (absl::Status s = r.Skip(field, wire_type); !s.ok()) {
      return s;
    }
  }
  const int32_t n = vocab.size();
  if (n == 0) return absl::InvalidArgumentError("SentencePiece model: no pieces");
  for (auto [name, id] : {std::pair<const char*, int32_t*>{"unk", &vocab.unk_id},
                          {"bos", &vocab.bos_id}, {"eos", &vocab.eos_id}, {"pad", &vocab.pad_id}}) {
    if (*id < -1 || *id >= n) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "SentencePiece model: %s_id %d is out of range for %d pieces", name, *id, n));
    }
  }
  return vocab;
}

// ---------------------------------------------------------------------------
// GGUF tokenizer keys beyond the token lists.

namespace {

// A special-token id: absent, or all ones (llama.cpp's "none"), is -1.
absl::StatusOr<int32_t> OptionalTokenId(const gguf::File& f, std::string_view key, int32_t n_vocab) {
  const gguf::Value* v = f.Find(key);
  if (v == nullptr) return -1;
  if (const auto* u = std::get_if<uint64_t>(&v->data);
      u != nullptr && (*u == 0xFFFFFFFFu || *u == ~uint64_t{0})) {
    return -1;
  }
  absl::StatusOr<int64_t> id = f.GetInt(key);
  if (!id.ok()) return id.status();
  if (*id < 0) return -1;
  if (*id >= n_vocab) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "GGUF: %s is %d, outside the vocabulary of %d tokens", absl::string_view(key.data(), key.size()), *id,
        n_vocab));
  }
  return static_cast<int32_t>(*id);
}

}  // namespace

absl::Status ReadGgufVocabExtras(const gguf::File& file, Vocab& vocab) {
  if (file.Find("tokenizer.ggml.pre") != nullptr) {
    absl::StatusOr<std::string> pre = file.GetString("tokenizer.ggml.pre");
    if (!pre.ok()) return pre.status();
    vocab.pre = *std::move(pre);
  }
  absl::StatusOr<int32_t> eot = OptionalTokenId(file, "tokenizer.ggml.eot_token_id", vocab.size());
  if (!eot.ok()) return eot.status();
  absl::StatusOr<int32_t> eom = OptionalTokenId(file, "tokenizer.ggml.eom_token_id", vocab.size());
  if (!eom.ok()) return eom.status();
  vocab.eot_id = *eot;
  vocab.eom_id = *eom;
  return absl::OkStatus();
}

}  // namespace sinkserve

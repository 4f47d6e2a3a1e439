// Byte-level BPE: the text is cut into pre-tokens by the vocabulary's
// pre-tokenizer (engine/text/pre_tokenizer.h), each pre-token's bytes are mapped through
// bytes_to_unicode, and within a pre-token the adjacent pair with the lowest
// merge rank is merged (leftmost on ties) until no pair has a rank. Each
// final symbol is looked up as a token; a symbol without one falls back to
// its single-byte tokens. Special tokens in the text are plain text.
#include <memory>
#include <queue>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "engine/text/pre_tokenizer.h"
#include "engine/text/tokenizer.h"
#include "engine/text/unicode.h"

namespace sinkserve {
namespace {

// Debian's Abseil is built without std::string_view aliasing, so
// heterogeneous map lookups need an absl::string_view.
absl::string_view AsAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

class Gpt2Tokenizer final : public Tokenizer {
 public:
  explicit Gpt2Tokenizer(Vocab vocab) : Tokenizer(std::move(vocab)) {}
  absl::Status Init();

  std::vector<int32_t> Encode(std::string_view text, bool add_bos) const override;
  std::string DecodeToken(int32_t prev_id, int32_t id) const override;

 private:
  struct Symbol {
    int32_t prev;
    int32_t next;
    size_t offset;  // into the mapped pre-token
    size_t length;  // bytes; 0 once merged into its left neighbour
  };
  struct Bigram {
    int32_t left;
    int32_t right;
    int32_t rank;
    size_t length;  // left.length + right.length when queued; stale otherwise
    // Max-heap order: lowest rank first, then the leftmost pair.
    bool operator<(const Bigram& o) const {
      return rank > o.rank || (rank == o.rank && left > o.left);
    }
  };

  void EncodeWord(std::string_view word, std::string& mapped, std::vector<int32_t>& out) const;
  TokenType TypeOf(int32_t id) const {
    return vocab_.token_types.empty() ? TokenType::kNormal : vocab_.token_types[id];
  }

  std::unique_ptr<PreTokenizer> pre_;  // compiled once, shared by every Encode
  ByteUnicodeMap byte_map_;
  absl::flat_hash_map<std::string, int32_t> token_ids_;  // token text -> id
  absl::flat_hash_map<std::string, int32_t> ranks_;      // "left right" -> merge rank
};

absl::Status Gpt2Tokenizer::Init() {
  absl::StatusOr<std::unique_ptr<PreTokenizer>> pre = PreTokenizer::Create(vocab_.pre);
  if (!pre.ok()) return pre.status();
  pre_ = *std::move(pre);
  for (int32_t id = 0; id < size(); ++id) token_ids_.try_emplace(vocab_.tokens[id], id);
  ranks_.reserve(vocab_.merges.size());
  for (size_t rank = 0; rank < vocab_.merges.size(); ++rank) {
    const std::string& merge = vocab_.merges[rank];
    // A merge is "left right"; GPT-2 pieces never hold a literal space (it is
    // mapped to U+0120), so the first space after the first byte separates.
    const size_t space = merge.find(' ', 1);
    if (space == std::string::npos || space + 1 >= merge.size() ||
        merge.find(' ', space + 1) != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "vocabulary: GPT-2 merge %d (\"%s\") is not of the form \"left right\"", rank,
          absl::CHexEscape(merge)));
    }
    ranks_.try_emplace(merge, static_cast<int32_t>(rank));
  }
  return absl::OkStatus();
}

void Gpt2Tokenizer::EncodeWord(std::string_view word, std::string& mapped,
                               std::vector<int32_t>& out) const {
  // One symbol per input byte, each the UTF-8 text of its mapped codepoint.
  mapped.clear();
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  for (char c : word) {
    const std::string& m = byte_map_.Encode(static_cast<uint8_t>(c));
    const int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back({index - 1, index + 1, mapped.size(), m.size()});
    mapped.append(m);
  }
  symbols.back().next = -1;
  const std::string_view text = mapped;
  if (pre_->ignore_merges()) {
    // Never a control token: text must not turn into <|eot_id|> and friends.
    if (auto it = token_ids_.find(AsAbsl(text)); it != token_ids_.end() && TypeOf(it->second) != TokenType::kControl) {
      out.push_back(it->second);
      return;
    }
  }

  std::priority_queue<Bigram> queue;
  std::string key;
  auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    key.assign(text.substr(symbols[left].offset, symbols[left].length));
    key.push_back(' ');
    key.append(text.substr(symbols[right].offset, symbols[right].length));
    auto it = ranks_.find(key);
    if (it == ranks_.end()) return;
    queue.push({left, right, it->second, symbols[left].length + symbols[right].length});
  };
  for (int32_t i = 1; i < static_cast<int32_t>(symbols.size()); ++i) try_add(i - 1, i);

  while (!queue.empty()) {
    const Bigram top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.left];
    Symbol& right = symbols[top.right];
    if (left.length == 0 || right.length == 0 || left.next != top.right ||
        left.length + right.length != top.length) {
      continue;  // stale: one side was merged since this pair was queued
    }
    left.length += right.length;
    right.length = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.left;
    try_add(left.prev, top.left);
    try_add(top.left, left.next);
  }

  for (int32_t i = 0; i >= 0; i = symbols[i].next) {
    const std::string_view piece = text.substr(symbols[i].offset, symbols[i].length);
    if (auto it = token_ids_.find(AsAbsl(piece)); it != token_ids_.end()) {
      out.push_back(it->second);
      continue;
    }
    // A merge whose result is not a token: fall back to one token per byte.
    for (size_t pos = 0; pos < piece.size();) {
      const int len = DecodeUtf8(piece, pos).length;
      if (auto it = token_ids_.find(AsAbsl(piece.substr(pos, len))); it != token_ids_.end()) {
        out.push_back(it->second);
      } else if (vocab_.unk_id >= 0) {
        out.push_back(vocab_.unk_id);
      }
      pos += len;
    }
  }
}

std::vector<int32_t> Gpt2Tokenizer::Encode(std::string_view text, bool add_bos) const {
  std::vector<int32_t> out;
  if (add_bos && vocab_.bos_id >= 0) out.push_back(vocab_.bos_id);
  std::string mapped;
  for (std::string_view word : pre_->Split(text)) EncodeWord(word, mapped, out);
  return out;
}

std::string Gpt2Tokenizer::DecodeToken(int32_t /*prev_id*/, int32_t id) const {
  if (id < 0 || id >= size()) return "";
  const TokenType type = TypeOf(id);
  if (type == TokenType::kControl) return "";
  const std::string& piece = vocab_.tokens[id];
  if (type == TokenType::kUserDefined) return piece;
  // Undo bytes_to_unicode; codepoints outside the table pass through as UTF-8.
  std::string bytes;
  bytes.reserve(piece.size());
  for (size_t pos = 0; pos < piece.size();) {
    const Utf8Char ch = DecodeUtf8(piece, pos);
    const int byte = ch.codepoint == kInvalidCodepoint ? -1 : byte_map_.Decode(ch.codepoint);
    if (byte >= 0) bytes.push_back(static_cast<char>(byte));
    else bytes.append(piece, pos, ch.length);
    pos += ch.length;
  }
  return bytes;
}

}  // namespace

namespace tokenizer_internal {
absl::StatusOr<std::unique_ptr<Tokenizer>> NewGpt2Tokenizer(Vocab vocab) {
  auto tokenizer = std::make_unique<Gpt2Tokenizer>(std::move(vocab));
  if (absl::Status s = tokenizer->Init(); !s.ok()) return s;
  return std::unique_ptr<Tokenizer>(std::move(tokenizer));
}
}  // namespace tokenizer_internal

}  // namespace sinkserve

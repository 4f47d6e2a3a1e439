// SentencePiece BPE with byte fallback, as llama2.c's encode() and llama.cpp's
// llm_tokenizer_spm do it: the text (with a dummy-prefix space, spaces as
// U+2581) is split into UTF-8 characters; then the adjacent pair whose
// concatenation is a piece with the highest score is merged (leftmost on
// ties) until no pair is a piece. Characters left without a piece become
// their <0xXX> byte tokens. A max-heap of candidate pairs over a doubly
// linked list of symbols makes this O(n log n).
#include <algorithm>
#include <array>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "engine/text/tokenizer.h"
#include "engine/text/unicode.h"

namespace sinkserve {
namespace {

// Debian's Abseil is built without std::string_view aliasing, so
// heterogeneous map lookups need an absl::string_view.
absl::string_view AsAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";  // U+2581 LOWER ONE EIGHTH BLOCK
constexpr std::string_view kUnknownText = "\xE2\x96\x85";  // U+2585, llama.cpp's <unk> rendering

// Parses "<0xXX>" (uppercase or lowercase hex); -1 when `piece` is not one.
int ParseBytePiece(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
  int value = 0;
  for (char c : piece.substr(3, 2)) {
    value <<= 4;
    if (c >= '0' && c <= '9') value |= c - '0';
    else if (c >= 'A' && c <= 'F') value |= c - 'A' + 10;
    else if (c >= 'a' && c <= 'f') value |= c - 'a' + 10;
    else return -1;
  }
  return value;
}

class SpmTokenizer final : public Tokenizer {
 public:
  explicit SpmTokenizer(Vocab vocab);

  std::vector<int32_t> Encode(std::string_view text, bool add_bos) const override;
  std::string DecodeToken(int32_t prev_id, int32_t id) const override;

 private:
  // One character or merged run of the normalized text, in a linked list.
  struct Symbol {
    int32_t prev;
    int32_t next;
    size_t offset;  // into the normalized text
    size_t length;  // bytes; 0 once merged into its left neighbour
  };
  // A candidate merge of symbols left and left's next.
  struct Bigram {
    int32_t left;
    int32_t right;
    float score;
    size_t length;  // left.length + right.length when queued; stale otherwise
    // Max-heap order: higher score first, then the leftmost pair.
    bool operator<(const Bigram& o) const {
      return score < o.score || (score == o.score && left > o.left);
    }
  };

  float Score(int32_t id) const { return vocab_.scores.empty() ? 0.0f : vocab_.scores[id]; }
  void AppendPieceOrBytes(std::string_view piece, std::vector<int32_t>& out) const;
  // Runs the merge loop over `text` (a run of the normalized input) and
  // appends its tokens; `symbols` and `heap` are scratch space.
  void MergeSegment(std::string_view text, std::vector<Symbol>& symbols, std::vector<Bigram>& heap,
                    std::vector<int32_t>& out) const;

  std::vector<TokenType> types_;                        // (n_vocab) explicit or inferred
  absl::flat_hash_map<std::string, int32_t> mergeable_;  // pieces encoding may produce
  std::array<int32_t, 256> byte_ids_;                   // byte -> <0xXX> token, -1 if absent
  std::vector<int16_t> byte_values_;                    // (n_vocab) byte of a byte token, else -1
  // ASCII bytes that occur in no mergeable piece longer than one byte: no
  // merge can span them, so they split the text into independent runs.
  std::array<bool, 256> barrier_;
};

SpmTokenizer::SpmTokenizer(Vocab vocab) : Tokenizer(std::move(vocab)) {
  byte_ids_.fill(-1);
  barrier_.fill(false);
  for (int b = 0; b < 0x80; ++b) barrier_[b] = true;
  const int32_t n = size();
  types_.resize(n, TokenType::kUndefined);
  byte_values_.assign(n, -1);
  for (int32_t id = 0; id < n; ++id) {
    const std::string& piece = vocab_.tokens[id];
    TokenType type = vocab_.token_types.empty() ? TokenType::kUndefined : vocab_.token_types[id];
    const int byte = ParseBytePiece(piece);
    if (type == TokenType::kUndefined) {
      if (byte >= 0) type = TokenType::kByte;
      else if (id == vocab_.bos_id || id == vocab_.eos_id) type = TokenType::kControl;
      else if (id == vocab_.unk_id) type = TokenType::kUnknown;
      else type = TokenType::kNormal;
    }
    types_[id] = type;
    if (type == TokenType::kByte && byte >= 0) {
      byte_values_[id] = static_cast<int16_t>(byte);
      if (byte_ids_[byte] < 0) byte_ids_[byte] = id;
    }
    // Like SentencePiece, control, unknown and byte pieces are never produced
    // by merging text (a literal "<s>" in a prompt stays plain text).
    if (type == TokenType::kNormal || type == TokenType::kUserDefined || type == TokenType::kUnused) {
      mergeable_.try_emplace(piece, id);
      if (piece.size() > 1) {
        for (char c : piece) barrier_[static_cast<uint8_t>(c)] = false;
      }
    }
  }
}

void SpmTokenizer::AppendPieceOrBytes(std::string_view piece, std::vector<int32_t>& out) const {
  if (auto it = mergeable_.find(AsAbsl(piece)); it != mergeable_.end()) {
    out.push_back(it->second);
    return;
  }
  for (char c : piece) {
    const int32_t id = byte_ids_[static_cast<uint8_t>(c)];
    if (id >= 0) {
      out.push_back(id);
    } else if (vocab_.unk_id >= 0) {
      out.push_back(vocab_.unk_id);
    }
  }
}

std::vector<int32_t> SpmTokenizer::Encode(std::string_view text, bool add_bos) const {
  std::vector<int32_t> out;
  if (add_bos && vocab_.bos_id >= 0) out.push_back(vocab_.bos_id);
  if (text.empty()) return out;  // no dummy prefix for empty text (HF, llama.cpp)

  std::string normalized;
  normalized.reserve(text.size() + 3 + text.size() / 2);
  if (vocab_.add_space_prefix) normalized.append(kSpaceMarker);
  for (char c : text) {
    if (c == ' ') normalized.append(kSpaceMarker);
    else normalized.push_back(c);
  }
  const std::string_view norm = normalized;

  // Merge each run between barrier bytes on its own: a smaller heap stays in
  // cache, and no merge can cross a barrier anyway.
  std::vector<Symbol> symbols;
  std::vector<Bigram> heap;
  size_t begin = 0;
  for (size_t pos = 0; pos < norm.size(); ++pos) {
    if (!barrier_[static_cast<uint8_t>(norm[pos])]) continue;
    if (pos > begin) MergeSegment(norm.substr(begin, pos - begin), symbols, heap, out);
    AppendPieceOrBytes(norm.substr(pos, 1), out);
    begin = pos + 1;
  }
  if (begin < norm.size()) MergeSegment(norm.substr(begin), symbols, heap, out);
  return out;
}

void SpmTokenizer::MergeSegment(std::string_view text, std::vector<Symbol>& symbols,
                                std::vector<Bigram>& heap, std::vector<int32_t>& out) const {
  symbols.clear();
  for (size_t pos = 0; pos < text.size();) {
    const size_t len = static_cast<size_t>(DecodeUtf8(text, pos).length);
    const int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back({index - 1, index + 1, pos, len});
    pos += len;
  }
  symbols.back().next = -1;

  heap.clear();
  auto make_bigram = [&](int32_t left, int32_t right, Bigram& bigram) {
    if (left < 0 || right < 0) return false;
    const size_t length = symbols[left].length + symbols[right].length;
    auto it = mergeable_.find(AsAbsl(text.substr(symbols[left].offset, length)));
    if (it == mergeable_.end()) return false;
    bigram = {left, right, Score(it->second), length};
    return true;
  };
  auto push = [&](int32_t left, int32_t right) {
    Bigram bigram;
    if (!make_bigram(left, right, bigram)) return;
    heap.push_back(bigram);
    std::push_heap(heap.begin(), heap.end());
  };
  for (int32_t i = 1; i < static_cast<int32_t>(symbols.size()); ++i) {
    Bigram bigram;
    if (make_bigram(i - 1, i, bigram)) heap.push_back(bigram);
  }
  std::make_heap(heap.begin(), heap.end());

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    const Bigram top = heap.back();
    heap.pop_back();
    Symbol& left = symbols[top.left];
    Symbol& right = symbols[top.right];
    // Skip pairs made stale by an earlier merge of either side.
    if (left.length == 0 || right.length == 0 || left.next != top.right ||
        left.length + right.length != top.length) {
      continue;
    }
    left.length += right.length;
    right.length = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.left;
    push(left.prev, top.left);
    push(top.left, left.next);
  }

  for (int32_t i = 0; i >= 0; i = symbols[i].next) {
    AppendPieceOrBytes(text.substr(symbols[i].offset, symbols[i].length), out);
  }
}

std::string SpmTokenizer::DecodeToken(int32_t prev_id, int32_t id) const {
  if (id < 0 || id >= size()) return "";
  switch (types_[id]) {
    case TokenType::kControl:
      return "";
    case TokenType::kByte:
      if (byte_values_[id] >= 0) return std::string(1, static_cast<char>(byte_values_[id]));
      return "";
    case TokenType::kUnknown:
      return std::string(kUnknownText);
    case TokenType::kUserDefined:
      return vocab_.tokens[id];
    default:
      break;
  }
  std::string_view piece = vocab_.tokens[id];
  std::string text;
  text.reserve(piece.size());
  for (size_t pos = 0; pos < piece.size();) {
    if (piece.substr(pos, kSpaceMarker.size()) == kSpaceMarker) {
      text.push_back(' ');
      pos += kSpaceMarker.size();
    } else {
      text.push_back(piece[pos++]);
    }
  }
  // llama2.c drops the dummy-prefix space of the first piece after BOS.
  if (prev_id >= 0 && prev_id == vocab_.bos_id && !text.empty() && text[0] == ' ') text.erase(0, 1);
  return text;
}

}  // namespace

namespace tokenizer_internal {
std::unique_ptr<Tokenizer> NewSpmTokenizer(Vocab vocab) {
  return std::make_unique<SpmTokenizer>(std::move(vocab));
}
}  // namespace tokenizer_internal

}  // namespace sinkserve

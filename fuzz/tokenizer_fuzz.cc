// libFuzzer target: arbitrary bytes through every tokenizer (SentencePiece
// and byte-level BPE with each pre-tokenizer). The first byte picks the
// vocabulary. Every id must be in range, and decoding must give the text
// back: both algorithms are lossless (byte fallback, byte-level pieces).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>

#include "absl/strings/str_replace.h"
#include "fuzz/fuzz_data.h"

namespace {

// The bytes that `tok` encodes, alone, as <unk>: those its vocabulary has no
// piece for. Computed once per tokenizer.
const std::vector<bool>& MissingBytes(const sinkserve::Tokenizer& tok) {
  static std::map<const sinkserve::Tokenizer*, std::vector<bool>> cache;
  auto [it, fresh] = cache.try_emplace(&tok, 256, false);
  if (fresh) {
    for (int b = 0; b < 256; ++b) {
      const std::string one(1, static_cast<char>(b));
      for (int32_t id : tok.Encode(one, /*add_bos=*/false)) it->second[b] = it->second[b] || id == tok.vocab().unk_id;
    }
  }
  return it->second;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sinkserve;
  if (size == 0) return 0;
  const auto& tokenizers = fuzzing::Tokenizers();
  const Tokenizer& tok = *tokenizers[data[0] % tokenizers.size()];
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  const bool spm = tok.vocab().type == VocabType::kSentencePiece;
  // SPM drops its dummy-prefix space after BOS only, so it encodes with BOS.
  const std::vector<int32_t> ids = tok.Encode(text, /*add_bos=*/spm);
  std::string decoded;
  int32_t prev = -1;
  bool unknown = false;
  for (int32_t id : ids) {
    if (id < 0 || id >= tok.size()) std::abort();
    unknown |= id == tok.vocab().unk_id;
    decoded += tok.DecodeToken(prev, id);
    prev = id;
  }
  // A byte-level vocabulary may lack the pieces of bytes that never occur in
  // UTF-8 (refact's has no 0xFF); such a byte becomes <unk>, as in llama.cpp,
  // and the text cannot come back. Nothing else may become <unk>.
  if (unknown) {
    const std::vector<bool>& missing = MissingBytes(tok);
    bool any = false;
    for (unsigned char c : text) any |= missing[c];
    if (!any) std::abort();
    return 0;
  }
  // SPM writes spaces as U+2581; where no piece holds it (a vocabulary of
  // bytes only) it comes back as its three bytes, so compare with U+2581 and
  // space made one.
  if (spm) {
    if (absl::StrReplaceAll(decoded, {{"\xE2\x96\x81", " "}}) !=
        absl::StrReplaceAll(std::string(text), {{"\xE2\x96\x81", " "}})) {
      std::abort();
    }
  } else if (decoded != text) {
    std::abort();
  }
  return 0;
}

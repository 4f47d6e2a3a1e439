// Tokenizer::Create: validates a vocabulary and picks the algorithm. The two
// algorithms live in tokenizer_spm.cc and tokenizer_gpt2.cc.
#include "engine/text/tokenizer.h"

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace sinkserve {

// Factories defined next to each algorithm. They assume a vocabulary that
// passed ValidateVocab; the GPT-2 one can still fail on its merges or on an
// unknown pre-tokenizer name (SentencePiece ignores `pre`, as llama.cpp does).
namespace tokenizer_internal {
std::unique_ptr<Tokenizer> NewSpmTokenizer(Vocab vocab);
absl::StatusOr<std::unique_ptr<Tokenizer>> NewGpt2Tokenizer(Vocab vocab);
}  // namespace tokenizer_internal

namespace {

absl::Status CheckSpecialId(const char* name, int32_t id, int32_t n_vocab) {
  if (id < -1 || id >= n_vocab) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "vocabulary: %s id %d is out of range for %d tokens (use -1 for none)", name, id, n_vocab));
  }
  return absl::OkStatus();
}

absl::Status ValidateVocab(const Vocab& vocab) {
  const int32_t n = vocab.size();
  if (n == 0) return absl::InvalidArgumentError("vocabulary: no tokens");
  if (!vocab.scores.empty() && vocab.scores.size() != vocab.tokens.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "vocabulary: %d scores for %d tokens", vocab.scores.size(), vocab.tokens.size()));
  }
  if (!vocab.token_types.empty() && vocab.token_types.size() != vocab.tokens.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "vocabulary: %d token types for %d tokens", vocab.token_types.size(), vocab.tokens.size()));
  }
  for (size_t i = 0; i < vocab.token_types.size(); ++i) {
    const int32_t t = static_cast<int32_t>(vocab.token_types[i]);
    if (t < static_cast<int32_t>(TokenType::kUndefined) || t > static_cast<int32_t>(TokenType::kByte)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("vocabulary: token %d has invalid type %d", i, t));
    }
  }
  if (absl::Status s = CheckSpecialId("bos", vocab.bos_id, n); !s.ok()) return s;
  if (absl::Status s = CheckSpecialId("eos", vocab.eos_id, n); !s.ok()) return s;
  if (absl::Status s = CheckSpecialId("unk", vocab.unk_id, n); !s.ok()) return s;
  if (absl::Status s = CheckSpecialId("pad", vocab.pad_id, n); !s.ok()) return s;
  if (absl::Status s = CheckSpecialId("eot", vocab.eot_id, n); !s.ok()) return s;
  if (absl::Status s = CheckSpecialId("eom", vocab.eom_id, n); !s.ok()) return s;
  if (vocab.type == VocabType::kGpt2 && vocab.merges.empty()) {
    return absl::InvalidArgumentError("vocabulary: GPT-2 vocabulary has no merges");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Create(Vocab vocab) {
  if (absl::Status s = ValidateVocab(vocab); !s.ok()) return s;
  switch (vocab.type) {
    case VocabType::kSentencePiece:
      return tokenizer_internal::NewSpmTokenizer(std::move(vocab));
    case VocabType::kGpt2:
      return tokenizer_internal::NewGpt2Tokenizer(std::move(vocab));
  }
  return absl::InvalidArgumentError("vocabulary: unknown type");
}

}  // namespace sinkserve

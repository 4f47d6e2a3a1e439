// A tiny SentencePiece vocabulary for engine tests that need a Tokenizer but
// no model: <unk> <s> </s>, the 256 byte tokens (so any text encodes, one
// token per byte), then the chat templates' control tokens.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "engine/text/tokenizer.h"

namespace sinkserve::testing {

inline constexpr int32_t kFirstByteToken = 3;
// Appended only at the end, so the ids of earlier entries never move.
inline const std::vector<std::string> kTinySpecials = {
    "<|im_start|>", "<|im_end|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
    "<|user|>",     "<|assistant|>", "<|system|>",     "<|end|>",           "<start_of_turn>",
    "<end_of_turn>", "<|eom_id|>",   "[INST]",         "[/INST]"};

// With `n_specials`, only the first n entries of kTinySpecials are in the
// vocabulary (e.g. 12 leaves out Mistral's [INST] and [/INST]).
inline std::unique_ptr<Tokenizer> TinyTokenizer(size_t n_specials = kTinySpecials.size()) {
  Vocab v;
  v.tokens = {"<unk>", "<s>", "</s>"};
  v.token_types = {TokenType::kUnknown, TokenType::kControl, TokenType::kControl};
  for (int b = 0; b < 256; ++b) {
    v.tokens.push_back(absl::StrFormat("<0x%02X>", b));
    v.token_types.push_back(TokenType::kByte);
  }
  for (size_t i = 0; i < n_specials && i < kTinySpecials.size(); ++i) {
    v.tokens.push_back(kTinySpecials[i]);
    v.token_types.push_back(TokenType::kControl);
  }
  v.scores.assign(v.tokens.size(), 0.0f);
  v.unk_id = 0;
  v.bos_id = 1;
  v.eos_id = 2;
  v.add_space_prefix = false;
  return *Tokenizer::Create(std::move(v));
}

// The id of a control token in TinyTokenizer's vocabulary.
inline int32_t TinySpecial(const std::string& piece) {
  for (size_t i = 0; i < kTinySpecials.size(); ++i) {
    if (kTinySpecials[i] == piece) return kFirstByteToken + 256 + static_cast<int32_t>(i);
  }
  return -1;
}

// Byte-token ids for `text` as SentencePiece sees it: spaces become U+2581.
inline std::vector<int32_t> TinyBytes(const std::string& text) {
  std::vector<int32_t> ids;
  for (unsigned char c : text) {
    if (c == ' ') {
      for (unsigned char m : std::string("\xE2\x96\x81")) ids.push_back(kFirstByteToken + m);
    } else {
      ids.push_back(kFirstByteToken + c);
    }
  }
  return ids;
}

}  // namespace sinkserve::testing

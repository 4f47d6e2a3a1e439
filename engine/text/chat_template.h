// Chat templates: how a session's system prompt and user turns become tokens.
//
// A session's history is never re-encoded: each turn appends only its own new
// tokens. So a template here renders *increments*, not whole conversations:
//   - Preamble(): what a new session starts with (BOS, then the system block
//     for templates that have one); it is fed together with the first turn.
//   - UserTurn(): one user message plus the assistant header, preceded from
//     the second turn on by whatever closes the previous assistant message
//     (the model's end token is never fed, so the template supplies it).
// Control tokens such as <|im_start|> are looked up in the vocabulary by their
// exact piece text; a vocabulary without them gets their text encoded.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "engine/text/tokenizer.h"

namespace sinkserve {

enum class ChatTemplateKind {
  kRaw,     // base models: text appended verbatim
  kLlama2,  // <s>[INST] <<SYS>>..<</SYS>> user [/INST] answer </s> (also Mistral)
  kChatml,  // <|im_start|>role\n..<|im_end|>\n
  kLlama3,  // <|start_header_id|>role<|end_header_id|>\n\n..<|eot_id|>
  kZephyr,  // <|user|>\n..</s>\n<|assistant|>\n
};

// Canonical name ("raw", "llama2", "chatml", "llama3", "zephyr").
const char* ChatTemplateName(ChatTemplateKind kind);

// Parses a template name ("mistral" is llama2's format); INVALID_ARGUMENT
// listing the names otherwise.
absl::StatusOr<ChatTemplateKind> ParseChatTemplate(std::string_view name);

// Recognizes a GGUF tokenizer.chat_template (Jinja source) by its markers;
// kRaw when it is empty or unrecognized.
ChatTemplateKind DetectChatTemplate(std::string_view jinja);

class ChatTemplate {
 public:
  // `tokenizer` must outlive the template. Immutable after construction, so
  // one instance per kind serves every session.
  ChatTemplate(ChatTemplateKind kind, const Tokenizer& tokenizer);

  ChatTemplateKind kind() const { return kind_; }

  // The tokens a new session starts with: BOS when the vocabulary has one,
  // then the system block (llama2 carries its system prompt inside the first
  // [INST] instead, so UserTurn needs it too).
  std::vector<int32_t> Preamble(std::string_view system_prompt) const;

  // One user message. `first` is true for the session's first turn.
  std::vector<int32_t> UserTurn(std::string_view text, bool first, std::string_view system_prompt) const;

  // Raw text, appended verbatim (the `raw` turn flag, or the raw template).
  std::vector<int32_t> RawText(std::string_view text) const;

  // Extra tokens that end an assistant message (beyond EOS/BOS), e.g.
  // <|im_end|> for chatml; only those the vocabulary has.
  const std::vector<int32_t>& end_tokens() const { return end_tokens_; }

 private:
  // A piece of rendered text: `special` pieces name one control token.
  struct Piece {
    bool special;
    std::string text;
  };
  std::vector<int32_t> Render(const std::vector<Piece>& pieces) const;
  int32_t FindSpecial(const std::string& piece) const;

  ChatTemplateKind kind_;
  const Tokenizer& tokenizer_;
  std::vector<int32_t> end_tokens_;
  // The kind's control-token pieces found in the vocabulary, resolved once
  // (vocabularies have up to ~128k pieces).
  absl::flat_hash_map<std::string, int32_t> specials_;
};

}  // namespace sinkserve

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
// exact piece text and emitted as that one token; a vocabulary without them
// gets their text encoded together with the text around them. Text that comes
// from the user is always encoded as text, so a user cannot inject a control
// token by typing its name.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "engine/text/tokenizer.h"

namespace sinkserve {

// The numbering is stable (the engine keeps one ChatTemplate per kind, indexed
// by it): new kinds go at the end.
enum class ChatTemplateKind {
  kRaw,      // base models: text appended verbatim
  kLlama2,   // <s>[INST] <<SYS>>..<</SYS>> user [/INST] answer </s><s>[INST] ..
  kChatml,   // <|im_start|>role\n..<|im_end|>\n (Qwen, SmolLM, ...)
  kLlama3,   // <|start_header_id|>role<|end_header_id|>\n\n..<|eot_id|>
  kZephyr,   // <|user|>\n..</s>\n<|assistant|>\n
  kMistral,  // <s>[INST] system\n\nuser [/INST] answer</s>[INST] .. (no <<SYS>>, no BOS per turn)
  kPhi3,     // <|user|>\n..<|end|>\n<|assistant|>\n
  kGemma,    // <start_of_turn>user\n..<end_of_turn>\n<start_of_turn>model\n (system joins the first user turn)
};

// Every kind, in enum order: kAllChatTemplateKinds[i] has value i.
inline constexpr std::array<ChatTemplateKind, 8> kAllChatTemplateKinds = {
    ChatTemplateKind::kRaw,     ChatTemplateKind::kLlama2, ChatTemplateKind::kChatml, ChatTemplateKind::kLlama3,
    ChatTemplateKind::kZephyr,  ChatTemplateKind::kMistral, ChatTemplateKind::kPhi3,  ChatTemplateKind::kGemma,
};

// Canonical name ("raw", "llama2", "chatml", "llama3", "zephyr", "mistral",
// "phi3", "gemma").
const char* ChatTemplateName(ChatTemplateKind kind);

// The accepted names, comma-separated, for messages ("raw, llama2, ...").
std::string ChatTemplateNameList();

// Parses a template name (canonical names, plus "qwen" for chatml);
// INVALID_ARGUMENT listing the names otherwise.
absl::StatusOr<ChatTemplateKind> ParseChatTemplate(std::string_view name);

// What DetectChatTemplateOrDefault found in a GGUF tokenizer.chat_template.
struct DetectedTemplate {
  ChatTemplateKind kind;
  // True when the file has a template but no known family's markers were
  // found, so `kind` is the caller's default: worth a warning at start-up.
  // False for a recognized template and for an empty one (a base model).
  bool fallback;
};

// Recognizes a GGUF tokenizer.chat_template (Jinja source) by its markers:
// llama3 header ids, chatml <|im_start|>, gemma <start_of_turn>, phi3
// <|user|> with <|end|>, zephyr <|user|> without, llama2 [INST] with <<SYS>>,
// mistral [INST] without. Empty or unrecognized: `default_kind`.
DetectedTemplate DetectChatTemplateOrDefault(std::string_view jinja,
                                             ChatTemplateKind default_kind = ChatTemplateKind::kRaw);

// DetectChatTemplateOrDefault(jinja).kind: kRaw when empty or unrecognized.
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

  // Extra tokens that end an assistant message (beyond EOS/BOS): the
  // kind's end marker (<|im_end|>, <|eot_id|>/<|eom_id|>, <|end|>,
  // <end_of_turn>) when the vocabulary has it, and the EOT/EOM ids the
  // vocabulary declares (GGUF tokenizer.ggml.eot_token_id / eom_token_id).
  const std::vector<int32_t>& end_tokens() const { return end_tokens_; }

 private:
  // A piece of rendered text: `special` pieces name one control token.
  struct Piece {
    bool special;
    std::string text;
  };
  std::vector<int32_t> Render(const std::vector<Piece>& pieces) const;
  int32_t FindSpecial(const std::string& piece) const;
  std::vector<int32_t> MistralTurn(std::string_view body, bool first) const;

  ChatTemplateKind kind_;
  const Tokenizer& tokenizer_;
  std::vector<int32_t> end_tokens_;
  // The kind's control-token pieces found in the vocabulary, resolved once
  // (vocabularies have up to ~128k pieces).
  absl::flat_hash_map<std::string, int32_t> specials_;
};

}  // namespace sinkserve

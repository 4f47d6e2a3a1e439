#include "engine/text/pre_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace sinkserve {
namespace {

// GPT-2's split; also the last stage of several others. Its `\s+(?!\S)`
// leaves the last space of a run to start the next word (" world"). The
// original's trailing `|\s+` is not needed: a lone space before a non-space
// that nothing matches stays behind as the unmatched text between matches.
constexpr const char* kGpt2 =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))";

// Llama 3 (tiktoken cl100k style): case-insensitive contractions, a letter
// run may take one leading non-letter, numbers in groups of at most three,
// newlines kept together. `(?i:...)` is spelled out as llama.cpp does.
constexpr const char* kLlama3 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Qwen 2: Llama 3's split with every digit on its own.
constexpr const char* kQwen2 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// DeepSeek LLM's letter class: the cased scripts (Latin, Greek, Cyrillic,
// Armenian, Georgian, Cherokee, Glagolitic, Coptic, Deseret, Osage, ...)
// exactly as its tokenizer.json lists them; uncased scripts fall through to
// the CJK and number stages or stay unmatched.
constexpr const char* kDeepseekLetters =
    R"(\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293})"
    R"(\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A})"
    R"(\x{38C}\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556})"
    R"(\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF})"
    R"(\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D})"
    R"(\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D})"
    R"(\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3})"
    R"(\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107})"
    R"(\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D})"
    R"(\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184})"
    R"(\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D})"
    R"(\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF})"
    R"(\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F})"
    R"(\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2})"
    R"(\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+)";
// CJK ideographs, U+0800..U+4E00 and Hangul, as DeepSeek lists them.
constexpr const char* kDeepseekCjk = R"([\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+)";

// DeepSeek's `\s+$` (trailing whitespace), written so that a match is only
// tried where a whitespace run starts. The leftmost match of `\s+$` starts
// there anyway, so the split is the same; but the plain form retries from
// every space of every run, which is quadratic in the run length for the
// PCRE2 interpreter (seconds for a few hundred KB of spaced-out text).
constexpr const char* kTrailingSpace = R"((?<!\s)\s+$)";

struct Family {
  const char* family;
  std::vector<const char*> names;  // tokenizer.ggml.pre values, family first
  bool ignore_merges;
  std::vector<const char*> regexes;  // applied in order
};

// The pre-tokenizers llama.cpp defines for these names (src/llama-vocab.cpp).
const std::vector<Family>& Families() {
  static const std::vector<Family>* families = new std::vector<Family>{
      {"gpt-2", {"gpt-2", "phi-2", "mpt", "olmo"}, false, {kGpt2}},
      {"llama3", {"llama3", "llama-v3", "llama-bpe", "falcon3"}, true, {kLlama3}},
      {"dbrx", {"dbrx", "smaug-bpe"}, false, {kLlama3}},
      {"qwen2", {"qwen2", "deepseek-r1-qwen", "stablelm2", "megrez"}, false, {kQwen2}},
      {"deepseek-llm",
       {"deepseek-llm"},
       false,
       {R"([\r\n])", kDeepseekLetters, R"(\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+)",
        kTrailingSpace, kDeepseekCjk, R"(\p{N}+)"}},
      {"deepseek-coder",
       {"deepseek-coder"},
       false,
       {R"([\r\n])", R"(\s?\p{L}+)", R"(\s?\p{P}+)", kDeepseekCjk, R"(\p{N})"}},
      {"falcon", {"falcon"}, false, {R"([\p{P}\$\+<=>\^~\|`]+)", kGpt2, R"([0-9][0-9][0-9])"}},
      // Single digits first, then GPT-2's split.
      {"starcoder",
       {"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b"},
       false,
       {R"(\p{N})", kGpt2}},
      // llama.cpp's own fallback for files that name no known pre-tokenizer.
      {"default",
       {"default"},
       false,
       {R"([\p{P}\$\+<=>\^~\|]+)", kGpt2, R"(\p{N}+)", R"([0-9][0-9][0-9])"}},
  };
  return *families;
}

// Bounds on one pcre2_match call. None of the patterns above needs more than
// a few steps per character on ordinary text; these stop the quadratic
// backtracking a hostile input can provoke (e.g. `\s+$` on long runs of
// spaces that do not end the piece).
constexpr uint32_t kMatchLimit = 200000;
constexpr uint32_t kDepthLimit = 10000;
constexpr uint32_t kHeapLimitKib = 4096;

}  // namespace

struct PreTokenizer::Regex {
  pcre2_code* code = nullptr;
  pcre2_match_context* context = nullptr;
  ~Regex() {
    pcre2_match_context_free(context);
    pcre2_code_free(code);
  }
};

PreTokenizer::~PreTokenizer() = default;

std::string PreTokenizer::SupportedNames() {
  std::vector<std::string> names;
  for (const Family& f : Families()) names.insert(names.end(), f.names.begin(), f.names.end());
  return absl::StrJoin(names, ", ");
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizer::Create(std::string_view name) {
  const std::string_view wanted = name.empty() ? std::string_view("gpt-2") : name;
  const Family* family = nullptr;
  for (const Family& f : Families()) {
    for (const char* n : f.names) {
      if (wanted == n) family = &f;
    }
  }
  if (family == nullptr) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "vocabulary: tokenizer.ggml.pre '%s' is not a supported pre-tokenizer (supported: %s)",
        absl::string_view(name.data(), name.size()), SupportedNames()));
  }
  auto pre = std::unique_ptr<PreTokenizer>(new PreTokenizer());
  pre->family_ = family->family;
  pre->ignore_merges_ = family->ignore_merges;
  // UCP: \s, \p{..} and friends follow Unicode. MATCH_INVALID_UTF: invalid
  // UTF-8 in the subject never matches and never fails the call. DOLLAR_ENDONLY:
  // `$` is the end of the piece, as in the ECMAScript regexes llama.cpp runs.
  const uint32_t options = PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF | PCRE2_DOLLAR_ENDONLY;
  for (const char* pattern : family->regexes) {
    auto regex = std::make_unique<Regex>();
    int error = 0;
    PCRE2_SIZE error_offset = 0;
    regex->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED, options, &error,
                                &error_offset, nullptr);
    if (regex->code == nullptr) {
      std::array<PCRE2_UCHAR, 256> message{};
      pcre2_get_error_message(error, message.data(), message.size());
      return absl::InternalError(absl::StrFormat("pre-tokenizer '%s': regex %s does not compile at offset %d: %s",
                                                 family->family, pattern, error_offset,
                                                 reinterpret_cast<const char*>(message.data())));
    }
    // JIT is an optimization only: where it is unavailable the interpreter runs.
    pcre2_jit_compile(regex->code, PCRE2_JIT_COMPLETE);
    regex->context = pcre2_match_context_create(nullptr);
    if (regex->context == nullptr) return absl::ResourceExhaustedError("pre-tokenizer: out of memory");
    pcre2_set_match_limit(regex->context, kMatchLimit);
    pcre2_set_depth_limit(regex->context, kDepthLimit);
    pcre2_set_heap_limit(regex->context, kHeapLimitKib);
    pre->regexes_.push_back(std::move(regex));
  }
  return pre;
}

std::vector<std::string_view> PreTokenizer::Split(std::string_view text) const {
  if (text.empty()) return {};
  // Pieces as (offset, length) into `text`; each stage splits every piece.
  std::vector<std::pair<size_t, size_t>> pieces = {{0, text.size()}};
  std::vector<std::pair<size_t, size_t>> next;
  pcre2_match_data* match = pcre2_match_data_create(1, nullptr);
  for (const auto& regex : regexes_) {
    next.clear();
    next.reserve(pieces.size() * 2);
    for (const auto& [base, length] : pieces) {
      // The piece is the whole subject, so look-aheads and `$` stop at its
      // end, as in llama.cpp's per-piece matching.
      const auto subject = reinterpret_cast<PCRE2_SPTR>(text.data() + base);
      size_t gap = 0;  // start of the text not yet emitted
      while (gap < length && match != nullptr) {
        int rc = pcre2_match(regex->code, subject, length, gap, PCRE2_NOTEMPTY, match, regex->context);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
          // The JIT's small machine stack ran out; the interpreter keeps its
          // backtracking state on the heap (bounded by kHeapLimitKib).
          rc = pcre2_match(regex->code, subject, length, gap, PCRE2_NOTEMPTY | PCRE2_NO_JIT, match,
                           regex->context);
        }
        // No match, or a limit hit: the rest of the piece stays whole here
        // (later stages still split it).
        if (rc < 0) break;
        const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match);
        const size_t start = ovector[0], end = ovector[1];
        if (end <= start || end > length) break;  // NOTEMPTY forbids this; never loop on it
        if (start > gap) next.emplace_back(base + gap, start - gap);
        next.emplace_back(base + start, end - start);
        gap = end;
      }
      if (gap < length) next.emplace_back(base + gap, length - gap);
    }
    pieces.swap(next);
  }
  pcre2_match_data_free(match);
  std::vector<std::string_view> out;
  out.reserve(pieces.size());
  for (const auto& [offset, length] : pieces) out.push_back(text.substr(offset, length));
  return out;
}

}  // namespace sinkserve

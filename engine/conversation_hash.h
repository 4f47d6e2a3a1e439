// A running hash of a conversation's messages (role and text), so a request
// that restates earlier messages can be checked against what the session
// saw without keeping their text. The engine keeps one per session (and a
// session store keeps it with the session); the HTTP door computes the one a
// request states. FNV-1a: a consistency check, not a secret (the session id
// is the bearer secret).
#pragma once

#include <cstdint>
#include <string_view>

namespace sinkserve {

class ConversationHash {
 public:
  ConversationHash() = default;
  // A hash as value() and messages() reported it (a restored session).
  ConversationHash(uint64_t value, int64_t messages) : hash_(value), messages_(messages) {}

  void Add(bool assistant, std::string_view text) {
    StartAssistant();
    Append(text);
    Finish(assistant);
  }
  // Extends the hash of an assistant message as it streams in:
  // Add(true, a + b) == StartAssistant + Append(a) + Append(b) + FinishAssistant.
  void StartAssistant() { message_ = kBasis; }
  void Append(std::string_view text) { message_ = Fnv(message_, text); }
  void FinishAssistant() { Finish(true); }

  uint64_t value() const { return hash_; }
  int64_t messages() const { return messages_; }
  bool operator==(const ConversationHash& o) const { return hash_ == o.hash_ && messages_ == o.messages_; }

 private:
  static constexpr uint64_t kBasis = 1469598103934665603ull;
  static constexpr uint64_t kPrime = 1099511628211ull;
  static uint64_t Fnv(uint64_t h, std::string_view text) {
    for (unsigned char c : text) h = (h ^ c) * kPrime;
    return h;
  }
  // Folds the message in progress into the hash.
  void Finish(bool assistant) {
    hash_ = Fnv(hash_, assistant ? "a" : "u");
    hash_ = (hash_ ^ message_) * kPrime;
    ++messages_;
  }

  uint64_t hash_ = kBasis;
  uint64_t message_ = 0;
  int64_t messages_ = 0;
};

}  // namespace sinkserve

// Stop strings over streamed text. Text that might be the start of a stop
// string is held back until it is known not to be, so a client never sees
// any part of a stop string it asked for.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace sinkserve {

class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops);

  // Appends generated text. Returns the text that is now safe to emit. When a
  // stop string completes, *stopped becomes true and the returned text ends
  // just before it; everything after is dropped.
  std::string Push(std::string_view text, bool* stopped);
  // The held-back tail, once generation has ended for another reason.
  std::string Flush();

 private:
  std::vector<std::string> stops_;
  std::string held_;
};

}  // namespace sinkserve

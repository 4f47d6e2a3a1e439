// Golden greedy runs of karpathy's llama2.c run.c on stories260K
// (../shared/models/golden): the tokens at every position and one row of
// logits per forward call.
#pragma once

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "tests/test_data.h"

namespace sinkserve::testing {

struct GoldenRun {
  std::vector<int32_t> prompt;  // PROMPT_TOKENS, BOS first
  std::vector<int32_t> tokens;  // token at every position 0..; tokens[0] = BOS
  std::vector<float> logits;    // (rows, vocab): row p = logits after forward(tokens[p], p)
  int32_t rows(int32_t vocab) const { return static_cast<int32_t>(logits.size() / vocab); }
};

// Reads models/golden/<name>.{ids,logits.f32}; returns false if absent or malformed.
inline bool LoadGolden(const std::string& name, GoldenRun* run) {
  std::ifstream ids(SharedPath("models/golden/" + name + ".ids"));
  std::ifstream logits(SharedPath("models/golden/" + name + ".logits.f32"), std::ios::binary);
  if (!ids || !logits) return false;
  std::string line;
  while (std::getline(ids, line)) {
    std::istringstream in(line);
    std::string tag;
    in >> tag;
    if (tag == "PROMPT_TOKENS") {
      for (int32_t id; in >> id;) run->prompt.push_back(id);
      run->tokens = {run->prompt.empty() ? 1 : run->prompt[0]};
    } else if (tag == "TOK") {
      int32_t pos, id;
      in >> pos >> id;
      if (pos != static_cast<int32_t>(run->tokens.size())) return false;
      run->tokens.push_back(id);
    }
  }
  logits.seekg(0, std::ios::end);
  const auto bytes = logits.tellg();
  logits.seekg(0);
  run->logits.resize(static_cast<size_t>(bytes) / sizeof(float));
  logits.read(reinterpret_cast<char*>(run->logits.data()), bytes);
  return !run->prompt.empty() && !run->logits.empty();
}

inline const char* const kGoldenCases[] = {"stories260K_noprompt_n256", "stories260K_once_n64",
                                           "stories260K_once_n512"};

}  // namespace sinkserve::testing

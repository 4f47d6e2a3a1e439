// Command-line parsing for the clients: `--name value`, `--name=value`,
// repeatable flags, and bare switches, each declared up front so a typo is
// an error naming the flag. (The clients link only the wire contract, not
// the engine or tools, so they carry their own small parser.)
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace sinkserve::client {

class Args {
 public:
  Args(std::set<std::string> valued, std::set<std::string> switches)
      : valued_(std::move(valued)), switches_(std::move(switches)) {}

  absl::Status Parse(int argc, char** argv);

  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  bool Switch(const std::string& name) const { return set_switches_.count(name) > 0; }
  std::string String(const std::string& name, const std::string& fallback = "") const;
  std::vector<std::string> All(const std::string& name) const;  // every occurrence, in order
  absl::StatusOr<int64_t> Int(const std::string& name, int64_t fallback, int64_t lo, int64_t hi) const;
  absl::StatusOr<double> Double(const std::string& name, double fallback) const;

 private:
  std::set<std::string> valued_;
  std::set<std::string> switches_;
  std::map<std::string, std::vector<std::string>> values_;
  std::set<std::string> set_switches_;
};

// A client's main(): runs `run`; a failed status becomes one line,
// "<tool>: error: <message>", on stderr and exit status 1.
int ClientMain(const char* tool, absl::Status (*run)(int, char**), int argc, char** argv);

}  // namespace sinkserve::client

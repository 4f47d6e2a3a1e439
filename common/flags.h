// A small command-line parser for the offline tools and the server: `--name value` pairs and
// bare `--switch`es, each declared up front. Anything undeclared, missing or
// malformed is an error naming the flag, so a tool can exit with one line.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sinkserve {

class Flags {
 public:
  // `valued`: flags that take a value; `switches`: boolean flags.
  Flags(std::vector<std::string> valued, std::vector<std::string> switches);

  // `--help` (or -h) prints Usage() and exits 0.
  absl::Status Parse(int argc, char** argv);
  // One line of syntax, then every declared flag and switch.
  std::string Usage(const std::string& program) const;

  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  bool Switch(const std::string& name) const { return switches_set_.count(name) > 0; }
  std::string String(const std::string& name, const std::string& fallback = "") const;
  absl::StatusOr<int64_t> Int(const std::string& name, int64_t fallback) const;
  // Int() that must lie in [lo, hi]: "--name must be in [lo, hi], got v".
  absl::StatusOr<int64_t> IntInRange(const std::string& name, int64_t fallback, int64_t lo, int64_t hi) const;
  absl::StatusOr<double> Double(const std::string& name, double fallback) const;
  // A byte count, plain or with a binary suffix: 512M, 8G, 1T (K, M, G, T).
  absl::StatusOr<int64_t> Bytes(const std::string& name, int64_t fallback) const;
  absl::StatusOr<std::string> Required(const std::string& name) const;

 private:
  std::vector<std::string> valued_;
  std::vector<std::string> switches_;
  std::map<std::string, std::string> values_;
  std::map<std::string, bool> switches_set_;
};

}  // namespace sinkserve

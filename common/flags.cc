#include "common/flags.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"

namespace sinkserve {

Flags::Flags(std::vector<std::string> valued, std::vector<std::string> switches)
    : valued_(std::move(valued)), switches_(std::move(switches)) {}

std::string Flags::Usage(const std::string& program) const {
  const size_t slash = program.rfind('/');
  std::string out = absl::StrFormat("usage: %s [--flag VALUE | --flag=VALUE | --switch]...\n",
                                    slash == std::string::npos ? program : program.substr(slash + 1));
  std::vector<std::string> valued = valued_, switches = switches_;
  std::sort(valued.begin(), valued.end());
  std::sort(switches.begin(), switches.end());
  out += "flags with a value:";
  for (const std::string& name : valued) out += " --" + name;
  out += "\nswitches:";
  for (const std::string& name : switches) out += " --" + name;
  out += "\nWhat each does, its default and its bounds: README.md (Limits and defaults, and the tools' sections).\n";
  return out;
}

absl::Status Flags::Parse(int argc, char** argv) {
  auto contains = [](const std::vector<std::string>& v, const std::string& s) {
    return std::find(v.begin(), v.end(), s) != v.end();
  };
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(Usage(argc > 0 ? argv[0] : "").c_str(), stdout);
      std::exit(0);
    }
    if (arg.rfind("--", 0) != 0) return absl::InvalidArgumentError(absl::StrFormat("unexpected argument '%s'", arg));
    std::string name = arg.substr(2);
    std::string value;
    bool has_inline = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_inline = true;
    }
    if (contains(switches_, name)) {
      if (has_inline) return absl::InvalidArgumentError(absl::StrFormat("--%s takes no value", name));
      switches_set_[name] = true;
    } else if (contains(valued_, name)) {
      if (!has_inline) {
        if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrFormat("--%s needs a value", name));
        value = argv[++i];
      }
      values_[name] = value;
    } else {
      return absl::InvalidArgumentError(absl::StrFormat("unknown flag --%s (--help lists them)", name));
    }
  }
  return absl::OkStatus();
}

std::string Flags::String(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

absl::StatusOr<std::string> Flags::Required(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) return absl::InvalidArgumentError(absl::StrFormat("--%s is required", name));
  return it->second;
}

absl::StatusOr<int64_t> Flags::Int(const std::string& name, int64_t fallback) const {
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  int64_t v;
  if (!absl::SimpleAtoi(it->second, &v)) {
    return absl::InvalidArgumentError(absl::StrFormat("--%s expects an integer, got '%s'", name, it->second));
  }
  return v;
}

absl::StatusOr<int64_t> Flags::IntInRange(const std::string& name, int64_t fallback, int64_t lo,
                                          int64_t hi) const {
  absl::StatusOr<int64_t> v = Int(name, fallback);
  if (v.ok() && (*v < lo || *v > hi)) {
    return absl::InvalidArgumentError(absl::StrFormat("--%s must be in [%d, %d], got %d", name, lo, hi, *v));
  }
  return v;
}

absl::StatusOr<int64_t> Flags::Bytes(const std::string& name, int64_t fallback) const {
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  std::string digits = it->second;
  int shift = 0;
  if (!digits.empty()) {
    switch (digits.back()) {
      case 'K': case 'k': shift = 10; break;
      case 'M': case 'm': shift = 20; break;
      case 'G': case 'g': shift = 30; break;
      case 'T': case 't': shift = 40; break;
      default: break;
    }
    if (shift > 0) digits.pop_back();
  }
  int64_t v;
  if (!absl::SimpleAtoi(digits, &v) || v < 0 || v > (int64_t{1} << (62 - shift))) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--%s expects a byte count such as 4294967296, 512M or 8G, got '%s'", name, it->second));
  }
  return v << shift;
}

absl::StatusOr<double> Flags::Double(const std::string& name, double fallback) const {
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  double v;
  if (!absl::SimpleAtod(it->second, &v) || std::isnan(v)) {
    return absl::InvalidArgumentError(absl::StrFormat("--%s expects a number, got '%s'", name, it->second));
  }
  return v;
}

}  // namespace sinkserve

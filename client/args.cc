#include "client/args.h"

#include <cmath>
#include <cstdlib>
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"

namespace sinkserve::client {

absl::Status Args::Parse(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << "usage: " << (argc > 0 ? std::string(argv[0]).substr(std::string(argv[0]).rfind('/') + 1) : "")
                << " [--flag VALUE | --flag=VALUE | --switch]...\nflags with a value:";
      for (const std::string& name : valued_) std::cout << " --" << name;
      std::cout << "\nswitches:";
      for (const std::string& name : switches_) std::cout << " --" << name;
      std::cout << "\nWhat each does: README.md, and the header comment of the tool's source in client/.\n";
      std::exit(0);
    }
    if (arg.rfind("--", 0) != 0) return absl::InvalidArgumentError(absl::StrFormat("unexpected argument '%s'", arg));
    std::string name = arg.substr(2);
    std::string value;
    const size_t eq = name.find('=');
    const bool inline_value = eq != std::string::npos;
    if (inline_value) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (switches_.count(name)) {
      if (inline_value) return absl::InvalidArgumentError(absl::StrFormat("--%s takes no value", name));
      set_switches_.insert(name);
    } else if (valued_.count(name)) {
      if (!inline_value) {
        if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrFormat("--%s needs a value", name));
        value = argv[++i];
      }
      values_[name].push_back(value);
    } else {
      return absl::InvalidArgumentError(absl::StrFormat("unknown flag --%s (--help lists them)", name));
    }
  }
  return absl::OkStatus();
}

std::string Args::String(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second.back();
}

std::vector<std::string> Args::All(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

absl::StatusOr<int64_t> Args::Int(const std::string& name, int64_t fallback, int64_t lo, int64_t hi) const {
  if (!Has(name)) return fallback;
  int64_t v;
  if (!absl::SimpleAtoi(String(name), &v) || v < lo || v > hi) {
    return absl::InvalidArgumentError(absl::StrFormat("--%s expects an integer in [%d, %d], got '%s'", name, lo, hi,
                                                      String(name)));
  }
  return v;
}

absl::StatusOr<double> Args::Double(const std::string& name, double fallback) const {
  if (!Has(name)) return fallback;
  double v;
  if (!absl::SimpleAtod(String(name), &v) || !std::isfinite(v)) {
    return absl::InvalidArgumentError(absl::StrFormat("--%s expects a number, got '%s'", name, String(name)));
  }
  return v;
}

int ClientMain(const char* tool, absl::Status (*run)(int, char**), int argc, char** argv) {
  const absl::Status status = run(argc, argv);
  if (status.ok()) return 0;
  std::cerr << tool << ": error: " << status.message() << std::endl;
  return 1;
}

}  // namespace sinkserve::client

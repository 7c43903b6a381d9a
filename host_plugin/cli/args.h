// A small command-line parser for sd-graph's subcommands: `--flag value`, `--flag=value`, boolean
// switches, positionals, and `--` to end flags. Unknown flags are errors that name the flag.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace sd::cli {

struct FlagSpec {
  std::set<std::string> with_value;  // e.g. "tokenizer"
  std::set<std::string> switches;    // e.g. "json", "help"
};

class Args {
 public:
  static absl::StatusOr<Args> Parse(const std::vector<std::string>& argv, const FlagSpec& spec);
  std::optional<std::string> Get(const std::string& name) const;
  std::string GetOr(const std::string& name, const std::string& fallback) const;
  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  const std::vector<std::string>& positionals() const { return positionals_; }

 private:
  std::map<std::string, std::string> values_;
  std::vector<std::string> positionals_;
};

}  // namespace sd::cli

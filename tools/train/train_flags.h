// Number flags of the trainers' command lines.
#pragma once

#include <cstdio>
#include <string>
#include <type_traits>

#include "absl/strings/numbers.h"
#include "host_plugin/cli/args.h"

namespace sd::train {

// Parses flag `flag` into *out when given; false (after saying why on stderr, as `tool`) when it is
// not a number.
template <typename T>
bool ParseNumber(const char* tool, const sd::cli::Args& args, const std::string& flag, T* out) {
  const auto v = args.Get(flag);
  if (!v) return true;
  bool ok;
  if constexpr (std::is_floating_point_v<T>)
    ok = absl::SimpleAtod(*v, out);
  else
    ok = absl::SimpleAtoi(*v, out);
  if (!ok) std::fprintf(stderr, "%s: --%s: '%s' is not a number\n", tool, flag.c_str(), v->c_str());
  return ok;
}

}  // namespace sd::train

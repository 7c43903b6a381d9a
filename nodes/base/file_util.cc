#include "nodes/base/file_util.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace sd {

absl::StatusOr<std::string> ReadWholeFile(const std::string& path, absl::string_view what) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return absl::NotFoundError(absl::StrCat(what, " ", path, ": cannot read the file"));
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

absl::StatusOr<std::string> ReadToken(const std::string& path) {
  if (path.empty()) {
    const char* env = std::getenv("SD_WORKER_TOKEN");
    return std::string(env ? env : "");
  }
  std::ifstream in(path);
  if (!in)
    return absl::NotFoundError(absl::StrCat("--token-file ", path, ": cannot read the file"));
  std::string line;
  std::getline(in, line);
  const std::string token(absl::StripAsciiWhitespace(line));
  if (token.empty())
    return absl::InvalidArgumentError(
        absl::StrCat("--token-file ", path, ": the first line is empty"));
  return token;
}

}  // namespace sd

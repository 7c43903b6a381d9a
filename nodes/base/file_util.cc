#include "nodes/base/file_util.h"

#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
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

absl::Status WriteAtomically(const std::string& path,
                             const std::function<absl::Status(const std::string& tmp)>& write) {
  const size_t slash = path.rfind('/');
  const size_t dot = path.rfind('.');
  const bool has_ext = dot != std::string::npos && (slash == std::string::npos || dot > slash + 1);
  const std::string stem = has_ext ? path.substr(0, dot) : path;
  const std::string tmp =
      absl::StrCat(stem, ".tmp-", ::getpid(), has_ext ? path.substr(dot) : std::string());
  absl::Status s = write(tmp);
  if (s.ok() && std::rename(tmp.c_str(), path.c_str()) != 0) {
    s = absl::DataLossError(
        absl::StrCat(path, ": cannot move the finished file into place: ", std::strerror(errno)));
  }
  if (!s.ok()) std::remove(tmp.c_str());
  return s;
}

absl::Status WriteWholeFile(const std::string& path, absl::string_view bytes, absl::string_view what) {
  return WriteAtomically(path, [&](const std::string& tmp) -> absl::Status {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f || !f.write(bytes.data(), static_cast<std::streamsize>(bytes.size())) || !f.flush())
      return absl::PermissionDeniedError(absl::StrCat(what, " ", path, ": cannot write the file"));
    return absl::OkStatus();
  });
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

std::string DirOfExecutable() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "";
  const std::string p(buf, static_cast<size_t>(n));
  return p.substr(0, p.rfind('/'));
}

bool IsReadableFile(const std::string& path) { return std::ifstream(path).good(); }

}  // namespace sd

#include "worker/model_repo.h"

#include <dirent.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nodes/weights/demo_model.h"

namespace sd::worker {
namespace {

std::string RealPath(const std::string& p) {
  char buf[PATH_MAX];
  return ::realpath(p.c_str(), buf) ? std::string(buf) : std::string();
}

}  // namespace

absl::Status ModelRepository::Check() const {
  struct stat st;
  if (dir_.empty()) return absl::InvalidArgumentError("no model directory (--models DIR)");
  if (::stat(dir_.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::NotFoundError(
        absl::StrCat("model directory ", dir_, " does not exist or is not a directory"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ModelRepository::Resolve(const std::string& name) const {
  if (name.empty())
    return absl::InvalidArgumentError("no model named (the `checkpoint` parameter)");
  const bool plain = name.size() <= 200 && name[0] != '.' && name.find("..") == std::string::npos &&
                     std::all_of(name.begin(), name.end(), [](char c) {
                       return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' ||
                              c == '-' || c == '+';
                     });
  if (!plain) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model name '", name.substr(0, 200),
        "' is not a plain name (letters, digits, '.', '_', '-', '+'; "
        "no '/', no '..'): models are named in the worker's repository, never by path"));
  }
  const std::string root = RealPath(dir_);
  if (root.empty())
    return absl::NotFoundError(absl::StrCat("model directory ", dir_, " is not readable"));
  for (const std::string& candidate : {name, name + ".safetensors", name + ".ckpt"}) {
    const std::string path = dir_ + "/" + candidate;
    struct stat st;
    if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    // A symlink may point elsewhere: only files that really live under the directory are served.
    const std::string real = RealPath(path);
    if (real.rfind(root + "/", 0) != 0) {
      return absl::PermissionDeniedError(
          absl::StrCat("model '", name, "' resolves outside the model directory"));
    }
    return path;
  }
  // The demo model and its ControlNet are served by their file names even when the repository does
  // not hold them (the files every sd-graph falls back to), so `sd-graph txt2img --workers ...`
  // works without --model.
  if (std::string shipped = ShippedPathOf(name); !shipped.empty()) return shipped;
  std::vector<std::string> have;
  if (DIR* d = ::opendir(dir_.c_str())) {
    while (dirent* e = ::readdir(d)) {
      const std::string n = e->d_name;
      if (n[0] != '.' && have.size() < 20) have.push_back(n);
    }
    ::closedir(d);
  }
  std::sort(have.begin(), have.end());
  return absl::NotFoundError(absl::StrCat("no model '", name, "' in the worker's repository (has: ",
                                          have.empty() ? "nothing" : absl::StrJoin(have, ", "),
                                          ")"));
}

}  // namespace sd::worker

// The worker's model repository: a directory of checkpoints, addressed by name. Names are names,
// not paths: nothing a peer sends can make the worker open a file outside the directory.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace sd::worker {

class ModelRepository {
 public:
  explicit ModelRepository(std::string dir) : dir_(std::move(dir)) {}
  // Checks that the directory exists and is readable.
  absl::Status Check() const;
  // "sd15" or "sd15.safetensors" -> DIR/sd15.safetensors (also NAME.ckpt, NAME as is).
  // INVALID_ARGUMENT for anything path-like or with odd characters; NOT_FOUND (listing some names)
  // for a name that is not there.
  absl::StatusOr<std::string> Resolve(const std::string& name) const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
};

}  // namespace sd::worker

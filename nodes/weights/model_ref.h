// What a run computes with: a checkpoint, optionally with its VAE replaced by a standalone VAE
// file. Written as one string, "BASE" or "BASE|vae=VAE", so that it travels wherever a checkpoint
// name does (RunContext::checkpoint, node calls, a worker's LoadModel) and workers agree on all of
// it by one hash (ModelCache::Identity). The parts are paths in-process and names in a worker's
// repository.
//
//   SD_ASSIGN_OR_RETURN(ModelRef ref,
//   ModelRef::Parse("v1-5.safetensors|vae=vae-ft-mse.safetensors")); ref.base ==
//   "v1-5.safetensors"; ref.vae == "vae-ft-mse.safetensors"
#pragma once

#include <functional>
#include <string>

#include "absl/status/statusor.h"

namespace sd {

struct ModelRef {
  std::string base;
  std::string vae;  // "": the checkpoint's own

  // INVALID_ARGUMENT for an empty part, an unknown key or a repeated one.
  static absl::StatusOr<ModelRef> Parse(const std::string& text);
  std::string Format() const;
  bool HasPatches() const { return !vae.empty(); }
  // The same reference with every part passed through `resolve` (a name -> a path).
  absl::StatusOr<ModelRef> Map(
      const std::function<absl::StatusOr<std::string>(const std::string&)>& resolve) const;
};

}  // namespace sd

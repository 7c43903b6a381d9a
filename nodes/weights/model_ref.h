// What a run computes with: a checkpoint, optionally with its VAE replaced by a standalone VAE file
// and LoRAs applied (each with a strength on the UNet and one on the text encoder). Written as one
// string so that it travels wherever a checkpoint name does (RunContext::checkpoint, node calls, a
// worker's LoadModel), and workers agree on all of it by one hash (ModelCache::Identity):
//
//   BASE                      BASE|vae=VAE                 BASE|lora=NAME:0.8:1|lora=NAME2:1:1
//   BASE|control=CONTROLNET|control=CONTROLNET2   (ControlNet nodes pick theirs by index)
//
// The parts are paths in-process and names in a worker's repository.
//
//   SD_ASSIGN_OR_RETURN(ModelRef ref,
//   ModelRef::Parse("v1-5.safetensors|vae=vae-ft-mse.safetensors"));
//   // ref.base == "v1-5.safetensors", ref.vae == "vae-ft-mse.safetensors"
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace sd {

struct LoraRef {
  std::string name;
  double unet = 1.0, text = 1.0;
};

struct ModelRef {
  std::string base;
  std::string vae;  // "": the checkpoint's own
  std::vector<LoraRef> loras;
  std::vector<std::string>
      controls;  // ControlNet files, in the order ControlNet nodes' `index` counts

  // INVALID_ARGUMENT for an empty part, an unknown key, a second VAE or a strength that is not a
  // number.
  static absl::StatusOr<ModelRef> Parse(const std::string& text);
  std::string Format() const;
  bool HasPatches() const { return !vae.empty() || !loras.empty() || !controls.empty(); }
  // The same reference with every file passed through `resolve` (a name -> a path).
  absl::StatusOr<ModelRef> Map(
      const std::function<absl::StatusOr<std::string>(const std::string&)>& resolve) const;
};

// "NAME", "NAME:S" (S on both), "NAME:UNET:TEXT" (--lora's syntax; the numbers are the trailing
// fields, so a name may hold ':'); INVALID_ARGUMENT for no name or a strength that is not finite.
absl::StatusOr<LoraRef> ParseLoraSpec(const std::string& spec);

}  // namespace sd

// What a front end (sd-graph's generating commands, the GEGL operations) computes with, from its
// settings: --model, --vae, --lora (repeatable) and the <lora:NAME:W> tags of --prompt, as one
// model reference (model_ref.h). In-process the files are found on disk (a LoRA by path, or by name
// in --lora-dir or the model's folder); on workers every part is a name in their repositories.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nodes/ops/model_cache.h"
#include "nodes/weights/model_ref.h"

namespace sd {

struct ModelFlags {
  std::string model, vae, lora_dir, prompt;
  std::vector<std::string> loras;  // --lora NAME[:UNET[:TEXT]]
  bool remote = false;
  std::vector<std::string> controlnets;  // --controlnet FILE
};

absl::StatusOr<ModelRef> ModelFromFlags(const ModelFlags& flags);

// A LoRA as the run's model references name it: in-process its file (as given, else NAME[.ext] in
// --lora-dir or the model's folder; NOT_FOUND naming where it looked), on workers its file name.
absl::StatusOr<std::string> LoraPath(const ModelFlags& flags, const std::string& name);
// A part of a model reference named in a graph (RunContext::part_file): "lora" as LoraPath, "vae"
// a standalone VAE (in-process a readable file, on workers its file name).
absl::StatusOr<std::string> PartPath(const ModelFlags& flags, const std::string& part,
                                     const std::string& name);

// In-process: reads each LoRA against the model and warns (stderr, `who` first) of keys that patch
// nothing; with `strict` they are an error.
absl::Status CheckLoras(ModelCache& models, const ModelRef& ref, bool strict,
                        const std::string& who);

// The entries of `Lora hashes` as other tools write it ("name: hash10"; names are the files'
// stems), for the reference's LoRAs and their sha256s in order.
std::vector<std::string> LoraHashEntries(const ModelRef& ref,
                                         const std::vector<std::string>& sha256s);

}  // namespace sd

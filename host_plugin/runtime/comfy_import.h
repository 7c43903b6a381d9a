// A ComfyUI workflow (comfy_workflow.h) as one of our graph files: each ComfyUI node becomes the
// node kinds that compute the same thing, named after its id ("3", "3_sigmas", "3_loop", ...) so
// messages point at the user's node; every widget value becomes a graph input (equal values of one
// meaning share one input: "seed", "steps", "prompt", ...; differing ones are suffixed with the
// node id: "seed_3"); the model (checkpoint, LoRAs, VAE) is returned for the run to open.
//
// KSampler is ComfyUI's k-diffusion sampling over its sigmas (SigmaSchedule, SigmaStart, SigmaStep,
// SigmaEnd), seeded as ComfyUI seeds (initial noise = the seed's first draw over the latent;
// ancestral noise = its draws in order); CLIPTextEncode weights prompts with ComfyUI's syntax.
// ControlNetApply / ControlNetApplyAdvanced attach a ControlNet to a conditioning: the sampler that
// reads it runs a chain of ControlNet nodes (hint fitted as ComfyUI does: nearest-exact, centre
// crop) before the UNet step of that half.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "host_plugin/runtime/comfy_workflow.h"

namespace sd {

struct ComfyLora {
  std::string name;
  double unet = 1.0, text = 1.0;
};

// What the workflow's loaders name (file names as ComfyUI lists them, relative to its model
// folders).
struct ComfyModel {
  std::string checkpoint, vae;  // vae: "" = the checkpoint's own
  std::vector<ComfyLora> loras;
  // ControlNetLoader files, in the order the graph's ControlNet nodes number them (their `index`).
  std::vector<std::string> controlnets;
};

struct ComfyGraph {
  std::string text;  // a graph file, commented
  ComfyModel model;
};

struct ComfyImportOptions {
  std::string input_dir;  // where LoadImage's file names are found ("" = as given)
  // The file an ApplyLora node the import makes (samplers or encoders with differing LoRAs) names
  // for a LoraLoader's lora_name (a run: the file found, or the workers' name); unset: the name.
  std::function<absl::StatusOr<std::string>(const std::string& lora_name)> lora_file;
};

absl::StatusOr<ComfyGraph> TranslateComfyWorkflow(const ComfyWorkflow& workflow,
                                                  const ComfyImportOptions& options);

// A .json or .png file: a ComfyUI workflow rather than a graph file.
bool IsComfyWorkflowFile(const std::string& path);

// Reads (ReadComfyWorkflow) and translates FILE; LoadImage's names are found in options.input_dir,
// or beside the workflow when that is empty.
absl::StatusOr<ComfyGraph> ImportComfyWorkflow(const std::string& file,
                                               ComfyImportOptions options = {});

}  // namespace sd

// ComfyUI workflows on the command line: `sd-graph import-comfy` writes one as a graph file, and
// `sd-graph run WORKFLOW.json|IMAGE.png` runs one (comfy_import.h translates it).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "host_plugin/cli/args.h"

namespace sd::cli {

struct ComfyRun {
  std::string graph_text;
  std::string model, vae;          // files found for the workflow's loaders ("" when flags choose)
  std::vector<std::string> loras;  // NAME_OR_PATH:UNET:TEXT, as --lora takes them
  std::vector<std::string> controlnets;  // the ControlNetLoaders' files, in the graph's index order
  std::string embeddings_dir;      // --comfy-models DIR/embeddings when it exists ("" otherwise)
};

// Reads and translates the workflow; finds its checkpoint (unless --model), VAE (unless --vae),
// LoRAs and ControlNets in --comfy-models DIR (ComfyUI's models folder: checkpoints/, vae/, loras/,
// controlnet/), else beside
// the workflow, else as given; on workers (--workers) they are names in the workers' repositories.
// LoadImage's files are found in --input-dir (default: the workflow's folder).
absl::StatusOr<ComfyRun> PrepareComfyRun(const std::string& path, const Args& args);

}  // namespace sd::cli

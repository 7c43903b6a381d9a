// The way back: a graph made of kinds that have a ComfyUI equivalent, as a ComfyUI workflow in its
// API format, so a graph can be opened and run in ComfyUI. The samplers must be ComfyUI's
// (SigmaSchedule → SigmaStart → loop of UNetStep ×2, CfgCombine, Noise, SigmaStep [NoiseMaskIn/Out]
// → SigmaEnd: what import-comfy writes); prompts ComfyUI-weighted (TokenizePrompt → ClipEncode →
// ApplyPromptWeights with weighting "comfy"); ControlNet nodes chained into a UNet step's
// `control`, with ControlHint hints of an image, become ControlNetLoader + ControlNetApplyAdvanced
// on that half's conditioning. Widget values are the graph inputs' defaults. Anything else is
// refused, naming every node without an equivalent (the stock graphs' reference samplers have none
// in ComfyUI). Torch-free.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "host_plugin/runtime/comfy_import.h"
#include "proto/sd/v1/graph.pb.h"

namespace sd {

struct ComfyExportOptions {
  std::string checkpoint = "model.safetensors";  // CheckpointLoaderSimple's ckpt_name
  std::string filename_prefix = "sdgraph";       // SaveImage's
  std::string vae;                               // a VAELoader's vae_name ("": the checkpoint's)
  std::vector<ComfyLora> loras;                  // LoraLoaders after the checkpoint, in order
  // ControlNetLoaders' control_net_name, by the ControlNet nodes' index (the model's control=
  // files).
  std::vector<std::string> controlnets;
};

// The workflow as JSON text. `file` names the graph in messages.
absl::StatusOr<std::string> ExportComfyWorkflow(const v1::GraphConfig& graph,
                                                const std::string& file,
                                                const ComfyExportOptions& options = {});

}  // namespace sd

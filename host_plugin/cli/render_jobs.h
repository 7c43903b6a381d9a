// The images of a generating command (run, txt2img, img2img, inpaint): one graph run per image or
// farm frame, written with its parameters; the jobs run one after another or on several threads.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "host_plugin/cli/generate_util.h"
#include "host_plugin/runtime/comfy_export.h"
#include "host_plugin/runtime/graph.h"

namespace sd::cli {

// What every image (or farm frame) of a run shares; RenderImage makes one of them.
struct ImageJobs {
  Mode mode;
  std::string name, out, model, model_hash;
  const Graph* graph;
  std::map<std::string, Value> inputs;
  RunOptions options;
  RunContext* ctx;
  bool remote = false, farm = false, overwrite = false, seed_given = false;
  std::vector<int64_t> frames;    // farm mode: job b renders frames[b]
  std::vector<std::string> sets;  // --set NAME=VALUE, where {frame} is the frame number
  int64_t seed = 0, batch = 1;
  int jobs = 1;
  std::vector<std::pair<std::string, std::string>> dump_targets;
  std::mutex* print_mu;  // progress lines of concurrent jobs
  // What a model reference adds to an image's parameters: its LoRAs' "name: hash10" entries, and
  // its VAE ("": the checkpoint's) with its sha256.
  struct ModelParts {
    std::vector<std::string> loras;
    std::string vae, vae_hash;
  };
  ModelParts model_parts;  // the run's model's (--lora, <lora:> tags, --vae)
  // The parts of another model a graph's nodes compute with (its ApplyLora and ApplyVae nodes),
  // checked by the front end as --lora's are. Unset: the run's only.
  std::function<absl::StatusOr<ModelParts>(const std::string& model)> parts_of;
  std::string controlnets;    // `ControlNet 0: "..."` entries (ControlNetParameters)
  int64_t text_width = 0;     // of the model's text encoder: embeddings must match (0: unknown)
  // The model's files as a ComfyUI workflow names them: a graph ComfyUI can run is written into
  // each PNG as its `prompt` chunk (with the job's values), so ComfyUI opens the image as its
  // workflow.
  ComfyExportOptions comfy;
};

// Job `b`: runs the graph for image b (seed + b) or farm frame frames[b] (seed + frame, {frame}
// substituted; skipped when its file exists unless --overwrite) and writes the image with its
// parameters, and the --dump tensors. Cancelled (before writing) when options.cancelled is set.
absl::Status RenderImage(const ImageJobs& r, int b);

// Runs jobs 0 .. jobs-1: one after another when `parallel` is 1, else on `parallel` threads that
// take the next job until none is left or one has failed. The first error, or OK.
absl::Status RunJobs(int jobs, int parallel, const std::function<absl::Status(int)>& job);

}  // namespace sd::cli

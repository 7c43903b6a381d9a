// What a generating command's line says (run, txt2img, img2img, inpaint), parsed and checked before
// anything loads: the flags, the repeatable ones (--set, --dump, --lora, the ControlNet pairs), a
// ComfyUI workflow's own graph and files, the output, and the model (the demo model when none is
// named).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "host_plugin/cli/args.h"
#include "host_plugin/cli/comfy_run.h"
#include "host_plugin/cli/commands.h"
#include "host_plugin/cli/controlnet_flags.h"
#include "host_plugin/cli/generate_util.h"

namespace sd::cli {

struct Invocation {
  Mode mode = Mode::kRun;
  std::string name;  // "txt2img", ... (messages say "sd-graph NAME: ...")
  Args args;
  std::vector<std::string> sets, dumps, loras;  // repeatable, in command-line order
  ControlNetFlags control;
  std::optional<ComfyRun> comfy;  // `run WORKFLOW.json`
  std::string model;              // --model, a workflow's checkpoint, or the demo model
  std::string out;                // -o
  // The prompt <lora:...> tags count in: --prompt, or `run`'s last --set prompt=...
  std::string Prompt() const;
};

// Parses `argv` for `mode` into *inv. nullopt: go on; else the command is over (the help was
// printed: 0, or what is wrong was said: its exit code).
std::optional<int> ParseInvocation(Mode mode, const std::vector<std::string>& argv,
                                   Invocation* inv);

}  // namespace sd::cli

#include <cstdio>

#include "host_plugin/cli/commands.h"
#include "host_plugin/cli/common.h"
#include "nodes/weights/test_weights.h"

namespace sd::cli {

namespace {
constexpr char kHelp[] =
    "usage: sd-graph make-test-checkpoint OUT.safetensors [--tiny] [--inpaint] [--dtype "
    "f32|f16|bf16]\n"
    "                                     [--no-extras] [--controlnet [--layout L]]\n"
    "\n"
    "Writes a Stable Diffusion v1.x checkpoint in the original CompVis key naming, filled with "
    "the\n"
    "deterministic sdgold-v1 test weights (the rule the golden reference vectors were computed "
    "with).\n"
    "It loads and runs like a real checkpoint, but it was never trained: images made with it are "
    "noise.\n"
    "Use it to test installations, pipelines and workers, never to judge image quality.\n"
    "\n"
    "  --tiny       the small test configuration (same structure, small widths; ~50 MB) instead of "
    "full\n"
    "               SD v1.5 size (1.07e9 parameters, 4.3 GB in f32)\n"
    "  --inpaint    a 9-channel inpainting UNet\n"
    "  --dtype D    storage dtype (default f32)\n"
    "  --no-extras  omit the buffers real checkpoints also carry (betas, alphas_cumprod, "
    "position_ids, EMA)\n"
    "  --controlnet a ControlNet for that model instead (the golden ControlNet at full size; ~17 "
    "MB --tiny)\n"
    "  --layout L   its key layout: original (control_model.*, default), unprefixed or diffusers\n";
}  // namespace

int MakeTestCheckpointCommand(const std::vector<std::string>& argv) {
  int code = kExitOk;
  auto args = ParseCommandLine(
      "make-test-checkpoint", argv,
      {{"dtype", "layout"}, {"tiny", "inpaint", "no-extras", "controlnet"}}, kHelp, &code);
  if (!args) return code;
  if (args->positionals().size() != 1) {
    std::fprintf(stderr, "sd-graph make-test-checkpoint: expected OUT\n\n%s", kHelp);
    return kExitUsage;
  }
  TestCheckpointOptions options;
  options.config = args->Has("tiny") ? SdConfig::Tiny() : SdConfig::Sd15();
  if (args->Has("inpaint")) options.config.unet.in_channels = 9;
  options.with_extras = !args->Has("no-extras");
  if (auto d = args->Get("dtype")) {
    auto parsed = ParseFloatDType(*d);
    if (!parsed.ok()) {
      std::fprintf(stderr, "sd-graph make-test-checkpoint: %s\n", std::string(parsed.status().message()).c_str());
      return kExitUsage;
    }
    options.dtype = *parsed;
  }
  absl::Status s;
  if (args->Has("controlnet")) {
    TestControlNetOptions cn;
    cn.config = ControlNetConfig::For(options.config.unet);
    cn.dtype = options.dtype;
    const std::string layout = args->GetOr("layout", "original");
    if (layout == "unprefixed") {
      cn.layout = ControlNetLayout::kUnprefixed;
    } else if (layout == "diffusers") {
      cn.layout = ControlNetLayout::kDiffusers;
    } else if (layout != "original") {
      std::fprintf(stderr,
                   "sd-graph make-test-checkpoint: --layout %s: expected original, unprefixed or "
                   "diffusers\n",
                   layout.c_str());
      return kExitUsage;
    }
    s = WriteTestControlNet(args->positionals()[0], cn);
  } else {
    if (args->Has("layout")) {
      std::fprintf(stderr, "sd-graph make-test-checkpoint: --layout applies with --controlnet\n");
      return kExitUsage;
    }
    s = WriteTestCheckpoint(args->positionals()[0], options);
  }
  if (!s.ok()) return Fail("make-test-checkpoint", s);
  std::fprintf(stderr, "sd-graph make-test-checkpoint: wrote %s (sdgold-v1 test weights: images are noise)\n",
               args->positionals()[0].c_str());
  return kExitOk;
}

}  // namespace sd::cli

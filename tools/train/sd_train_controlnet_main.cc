// sd-train-controlnet: trains a Canny ControlNet for the demo model (or another model sd-train
// made). See controlnet_trainer.h for the recipe.
#include <cstdio>
#include <string>
#include <vector>

#include "host_plugin/cli/args.h"
#include "nodes/base/cpu_block_cache.h"
#include "nodes/base/runtime_info.h"
#include "tools/train/controlnet_trainer.h"
#include "tools/train/train_flags.h"

namespace {

constexpr char kTool[] = "sd-train-controlnet";

std::string Usage() {
  return std::string(
             "usage: sd-train-controlnet --model MODEL --out DIR [flags]\n"
             "\n"
             "Trains a ControlNet for MODEL (the demo model, or another model sd-train made) on "
             "the\n"
             "drawn shapes it was trained on, with each picture's Canny edges as the hint: the "
             "edges\n"
             "then fix the shape and its place, the prompt the colours. MODEL stays frozen; the\n"
             "ControlNet starts as a copy of its UNet's encoder with zero convolutions at zero.\n"
             "Progress (loss, seconds per step, ETA) goes to stdout and every loss to\n"
             "DIR/losses.tsv. The state is saved to DIR/state.pt every few minutes, on Ctrl-C and "
             "at\n"
             "the end: run the same command again to resume; the resumed run takes the same "
             "steps.\n"
             "The result is fp16 safetensors (ControlNet 1.1 names), for\n"
             "`sd-graph txt2img --controlnet FILE --hint PICTURE --hint-pass canny`.\n"
             "\n") +
         sd::train::FineTuneFlagsHelp(sd::train::ControlNetTrainOptions(),
                                      "controlnet.safetensors") +
         "  --canny-low N          Canny thresholds of the hints (default 100 and 200, as\n"
         "  --canny-high N         sd-graph's --canny-low/--canny-high)\n";
}

}  // namespace

int main(int argc, char** argv) {
  sd::EnsureFastBlasKernels(argv);
  const std::vector<std::string> argv_vec(argv + 1, argv + argc);
  sd::cli::FlagSpec spec;
  spec.with_value = sd::train::FineTuneFlagNames();
  spec.with_value.insert({"canny-low", "canny-high"});
  spec.switches = {"help"};
  auto args = sd::cli::Args::Parse(argv_vec, spec);
  if (!args.ok()) {
    std::fprintf(stderr, "%s: %s\n\n%s", kTool, std::string(args.status().message()).c_str(),
                 Usage().c_str());
    return 2;
  }
  if (args->Has("help")) {
    std::fputs(Usage().c_str(), stdout);
    return 0;
  }
  sd::train::ControlNetTrainOptions o;
  using sd::train::ParseNumber;
  if (!sd::train::ParseFineTuneFlags(kTool, *args, &o) ||
      !ParseNumber(kTool, *args, "canny-low", &o.canny_low) ||
      !ParseNumber(kTool, *args, "canny-high", &o.canny_high))
    return 2;
  if (o.canny_low < 0 || o.canny_high < o.canny_low || o.canny_high > 1023) {
    std::fprintf(stderr, "%s: 0 <= --canny-low <= --canny-high <= 1023\n", kTool);
    return 2;
  }
  // Training allocates and frees the same large activations every step: keep them mapped
  // (nodes/base/cpu_block_cache.h).
  sd::InstallCpuBlockCache();
  const absl::Status s = sd::train::TrainControlNet(o);
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", kTool, s.ToString().c_str());
    return 1;
  }
  return 0;
}

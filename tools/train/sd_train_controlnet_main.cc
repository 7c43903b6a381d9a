// sd-train-controlnet: trains a Canny ControlNet for the demo model (or another model sd-train
// made). See controlnet_trainer.h for the recipe.
#include <cstdio>
#include <string>

#include "tools/train/controlnet_trainer.h"
#include "tools/train/fine_tune_main.h"

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
  sd::train::ControlNetTrainOptions o;
  sd::train::FineTuneTool tool{kTool, Usage(), {"canny-low", "canny-high"}};
  tool.read_extra = [&](const sd::cli::Args& args) {
    using sd::train::ParseNumber;
    if (!ParseNumber(kTool, args, "canny-low", &o.canny_low) ||
        !ParseNumber(kTool, args, "canny-high", &o.canny_high))
      return false;
    if (o.canny_low < 0 || o.canny_high < o.canny_low || o.canny_high > 1023) {
      std::fprintf(stderr, "%s: 0 <= --canny-low <= --canny-high <= 1023\n", kTool);
      return false;
    }
    return true;
  };
  tool.train = [&] { return sd::train::TrainControlNet(o); };
  return sd::train::FineTuneMain(argc, argv, tool, &o);
}

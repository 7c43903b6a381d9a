// sd-train-inpaint: makes a 9-channel inpainting model from the demo model (or another model
// sd-train made). See inpaint_trainer.h for the recipe.
#include <cstdio>
#include <string>

#include "tools/train/fine_tune_main.h"
#include "tools/train/inpaint_trainer.h"

namespace {

constexpr char kTool[] = "sd-train-inpaint";

std::string Usage() {
  return std::string(
             "usage: sd-train-inpaint --model MODEL --out DIR [flags]\n"
             "\n"
             "Makes an inpainting model from MODEL (the demo model, or another model sd-train "
             "made),\n"
             "as SD-inpainting was made from SD v1.x: its UNet gains five input channels (the "
             "mask\n"
             "and the masked picture's latents), initialised at zero, and is fine-tuned on drawn\n"
             "shapes to paint what the caption says inside a region (a half, a box around the "
             "shape,\n"
             "or the whole picture) and to keep the rest, which often holds a second shape. The "
             "text\n"
             "encoder and the VAE stay MODEL's. Progress (loss, seconds per step, ETA) goes to "
             "stdout\n"
             "and every loss to DIR/losses.tsv. The state is saved to DIR/state.pt every few "
             "minutes,\n"
             "on Ctrl-C and at the end: run the same command again to resume; the resumed run "
             "takes\n"
             "the same steps. The result is a whole model (fp16 safetensors) that\n"
             "`sd-graph inpaint` runs with graphs/inpaint9.pbtxt.\n"
             "\n") +
         sd::train::FineTuneFlagsHelp(sd::train::InpaintTrainOptions(), "model.safetensors");
}

}  // namespace

int main(int argc, char** argv) {
  sd::train::InpaintTrainOptions o;
  sd::train::FineTuneTool tool{kTool, Usage(), {}};
  tool.train = [&] { return sd::train::TrainInpainting(o); };
  return sd::train::FineTuneMain(argc, argv, tool, &o);
}

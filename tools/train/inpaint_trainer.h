// sd-train-inpaint: makes a 9-channel inpainting model from a model sd-train made (the demo model),
// as SD-inpainting was made from SD v1.x. The UNet's first convolution gains five input channels
// (the latent mask and the latents of the masked picture, the order inpaint9.pbtxt feeds them in),
// initialised at zero so that training starts from the ordinary model; the UNet is then fine-tuned
// on inpainting samples (ShapesDataset::NextInpainting: a region to repaint, a caption of what it
// holds, often a second, uncaptioned shape outside it) while the text encoder and the VAE stay
// frozen. Epsilon prediction under SD's scaled-linear schedule, 10% of captions empty (classifier-
// free guidance). Every step's data and noise derive from (seed, step), so a resumed run takes the
// same steps. The state is saved every few minutes, on SIGINT/SIGTERM and at the end; the result
// is a whole model (fp16 safetensors: the base model's text encoder and VAE, the new UNet) with
// metadata saying what it is.
#pragma once

#include "absl/status/status.h"
#include "tools/train/fine_tune_options.h"

namespace sd::train {

// FineTuneOptions with the inpainting UNet's defaults: lr 1e-4, 10% of captions empty.
struct InpaintTrainOptions : FineTuneOptions {
  InpaintTrainOptions() {
    lr = 1e-4;
    uncond_fraction = 0.1;
  }
};

absl::Status TrainInpainting(const InpaintTrainOptions& options);

}  // namespace sd::train

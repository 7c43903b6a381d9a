// sd-train-controlnet: trains a ControlNet for a model sd-train made (the demo model), on the same
// drawn shapes, with the Canny edges of each picture as its hint. The base model stays frozen;
// the ControlNet starts as a copy of its UNet's encoder (time embedding, input blocks, middle
// block) with a fresh hint encoder and zero convolutions that start at zero, so training begins
// from the unsteered model, as lllyasviel's recipe does. Epsilon prediction under SD's
// scaled-linear schedule; a share of captions replaced by the empty prompt (more than the base
// model's 10%) so that the ControlNet learns to read the hint rather than the text.
// Every step's data and noise derive from (seed, step): a resumed run takes the same steps as one
// that never stopped. The state is saved every few minutes, on SIGINT/SIGTERM and at the end; the
// ControlNet is exported as fp16 safetensors under its unprefixed (ControlNet 1.1) names, with
// metadata saying what it is and what hint it reads.
#pragma once

#include "absl/status/status.h"
#include "tools/train/fine_tune_options.h"

namespace sd::train {

// FineTuneOptions with the ControlNet's defaults (lr 2e-4, a third of captions empty) and the
// Canny thresholds of its hints.
struct ControlNetTrainOptions : FineTuneOptions {
  int canny_low = 100, canny_high = 200;
};

absl::Status TrainControlNet(const ControlNetTrainOptions& options);

}  // namespace sd::train

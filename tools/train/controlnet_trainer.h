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

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace sd::train {

struct ControlNetTrainOptions {
  std::string base_model;     // the frozen model (sd-train's export, or any SD v1.x checkpoint)
  std::string out_dir;        // state.pt, losses.tsv, and (by default) controlnet.safetensors
  std::string export_path;    // default <out_dir>/controlnet.safetensors
  std::string tokenizer_dir;  // default: ClipTokenizer::DefaultDir()
  int size = 0;               // image side; 0: the base model's native size
  uint64_t seed = 1;
  int steps = 2000, batch = 32;
  double lr = 2e-4;
  int warmup_steps = 100;
  double uncond_fraction = 0.3;
  int canny_low = 100, canny_high = 200;
  int pool_size = 2048;  // drawn and encoded pictures the steps draw from (each used ~4 times)
  int log_every = 25;
  int save_every_s = 300;
  double max_minutes = 0;
  int stop_after_steps = 0;
  int threads = 0;
};

absl::Status TrainControlNet(const ControlNetTrainOptions& options);

}  // namespace sd::train

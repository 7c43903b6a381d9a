// What the fine-tuning trainers (sd-train-controlnet, sd-train-inpaint) share on their command
// lines: the frozen model, the output, the data and the step loop's settings. Torch-free.
#pragma once

#include <cstdint>
#include <string>

namespace sd::train {

struct FineTuneOptions {
  std::string base_model;     // the frozen model (sd-train's export, or any SD v1.x checkpoint)
  std::string out_dir;        // state.pt, losses.tsv, and (by default) the exported file
  std::string export_path;    // default: a file in out_dir named by the trainer
  std::string tokenizer_dir;  // default: ClipTokenizer::DefaultDir()
  int size = 0;               // image side; 0: the base model's native size
  uint64_t seed = 1;
  int steps = 2000, batch = 32;
  double lr = 2e-4;
  int warmup_steps = 100;
  double uncond_fraction = 0.3;  // captions replaced by the empty prompt
  int pool_size = 2048;  // drawn and encoded pictures the steps draw from (each used ~4 times)
  int log_every = 25;
  int save_every_s = 300;
  double max_minutes = 0;    // > 0: save and stop after this long (run again to resume)
  int stop_after_steps = 0;  // > 0: save and stop after this many steps of this run
  int threads = 0;           // 0: all cores
};

}  // namespace sd::train

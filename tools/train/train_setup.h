// What both trainers (sd-train, sd-train-controlnet) do before their first step, in one place: the
// picture size checked against the UNet, the output folder made, the tokenizer loaded, the thread
// count set, and Ctrl-C / SIGTERM turned into a stop request that the step loops poll.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "nodes/text/clip_tokenizer.h"
#include "nodes/weights/sd_config.h"

namespace sd::train {

// INVALID_ARGUMENT "--size N: <whose> needs a multiple of M" unless `size` is a positive multiple
// of what a UNet of `unet` needs (the VAE's 8 times its halvings).
absl::Status CheckSize(int size, const UNetConfig& unet, const std::string& whose);

// Makes `out_dir`, loads the tokenizer from `tokenizer_dir` (empty: the installed copy), sets the
// compute threads (0: all cores) and installs the stop-signal handlers.
absl::StatusOr<std::unique_ptr<ClipTokenizer>> StartTraining(const std::string& out_dir,
                                                             const std::string& tokenizer_dir,
                                                             int threads);

// Whether SIGINT or SIGTERM arrived since StartTraining.
bool StopRequested();

}  // namespace sd::train

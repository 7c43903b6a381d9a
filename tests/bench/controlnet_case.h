// sd-bench's ControlNet cases: the ControlNet for a checkpoint's UNet (a --controlnet file, else a
// generated sdgold-v1 one of the same configuration, the golden ControlNet at SD v1.5 size), loaded
// in each compute dtype, run at batch 1 and 2 next to the UNet step it steers.
#pragma once

#include <torch/types.h>

#include <string>

#include "absl/status/statusor.h"
#include "nodes/models/controlnet.h"

namespace sd {

// The ControlNet file to use: `file` when given, else one written into `dir` for `unet`.
absl::StatusOr<std::string> BenchControlNetFile(const UNetConfig& unet, const std::string& file,
                                                const std::string& dir);

// Its network in `dtype` on `device`.
absl::StatusOr<ControlNet> LoadBenchControlNet(const std::string& file, torch::ScalarType dtype,
                                               torch::Device device);

}  // namespace sd

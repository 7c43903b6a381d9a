// sd-bench's lora case: applying a rank-R LoRA (every UNet linear and convolution but the time
// embedding, kohya names, fp16 factors as most downloads are) to a checkpoint's UNet through the
// model cache, as a run does: the time to build the patched UNet against the plain one, and memory.
#pragma once

#include <torch/types.h>

#include <string>

#include "absl/status/statusor.h"

namespace sd {

struct LoraApplyTiming {
  int rank = 0;
  size_t layers = 0;
  double lora_file_bytes = 0;
  double base_seconds = 0;  // building the plain UNet
  double lora_seconds = 0;  // then the patched one (reading the LoRA, merging, caching)
  uint64_t rss_base = 0;    // resident memory with the plain UNet built
  uint64_t rss_patched =
      0;  // with both built (the patched one keeps its own copy of patched layers)
  uint64_t peak_rss = 0;
};

// Writes the LoRA into `dir`, then times it on `checkpoint` (a fresh model cache).
absl::StatusOr<LoraApplyTiming> TimeLoraApply(const std::string& checkpoint, int rank,
                                              torch::ScalarType dtype, const std::string& dir);

}  // namespace sd

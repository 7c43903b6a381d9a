// Deterministic test weights: the "sdgold-v1" rule of shared/golden/README.md, bit-identical to the
// numpy generator the reference ran on, and a writer for whole checkpoints in CompVis naming (full SD v1.5
// size, or the tiny configuration for fast tests). A checkpoint of these weights produces noise, not
// pictures: it exists to test loading and to compare against the golden vectors.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "nodes/weights/controlnet_layout.h"
#include "nodes/weights/sd_config.h"
#include "nodes/weights/tensor_view.h"

namespace sd {

uint64_t Fnv1a64(absl::string_view bytes);

// Fills `out` (numel of `shape`) with the sdgold-v1 values of tensor `name`, using up to `threads` threads.
void FillSdgold(const std::string& name, const std::vector<int64_t>& shape, float* out, int threads = 0);

uint16_t FloatToHalfBits(float f);      // IEEE binary16, round to nearest even
uint16_t FloatToBFloat16Bits(float f);  // round to nearest even

struct TestCheckpointOptions {
  SdConfig config = SdConfig::Sd15();
  DType dtype = DType::kF32;  // F32, F16 or BF16
  // Also write the buffers real checkpoints carry (betas, alphas_cumprod, position_ids, model_ema.*).
  bool with_extras = true;
  int threads = 0;  // 0: hardware concurrency
};

// Writes a safetensors checkpoint, one tensor at a time (memory stays at one tensor, not the model).
absl::Status WriteTestCheckpoint(const std::string& path, const TestCheckpointOptions& options);

struct TestControlNetOptions {
  ControlNetConfig config = ControlNetConfig::Sd15();
  DType dtype = DType::kF32;
  ControlNetLayout layout = ControlNetLayout::kOriginal;
  int threads = 0;
};

// Writes a ControlNet of sdgold-v1 weights (the values of the original layout's names,
// control_model.*, in every layout), as the golden ControlNet the reference ran on.
absl::Status WriteTestControlNet(const std::string& path, const TestControlNetOptions& options);

}  // namespace sd

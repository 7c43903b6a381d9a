// LoRA files: low-rank updates of the UNet's and the text encoder's weights,
//   ΔW = up · down · (alpha / rank) · strength,   rank = rows of `down`, alpha missing = rank,
// with LoCon's 3x3 `down` (1x1 `up`, optional Tucker `mid`) on convolutions, linear updates of 1x1
// convolutions, and 4-channel updates of a 9-channel (inpainting) first convolution zero-padded.
// Key names: lora_keys.h. Read from .safetensors or (restricted unpickler) .pt/.ckpt.
//
//   SD_ASSIGN_OR_RETURN(LoraFile lora, LoadLora(path, LoraKeyTable::ForModel(ExpectedKeys(cfg),
//   cfg.unet))); SD_RETURN_IF_ERROR(ApplyLoras(*unet, kUNetPrefix, LoraComponent::kUNet, {{&lora,
//   0.8}}));
#pragma once

#include <torch/nn/module.h>
#include <torch/types.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "nodes/weights/lora_keys.h"

namespace sd {

struct LoraLayer {
  std::string name;  // as the file names it
  LoraTarget target;
  torch::Tensor down, up, mid;  // float32; mid undefined unless LoCon's Tucker form
  double scale = 1.0;           // alpha / rank
};

struct LoraFile {
  std::string path, sha256;
  std::vector<LoraLayer> layers;
  std::vector<std::string> unmatched;  // keys that patch no layer of this model
};

// INVALID_ARGUMENT naming the file and key for a layer without its up or down tensor, a rank that
// does not agree, or a non-float tensor.
absl::StatusOr<LoraFile> LoadLora(const std::string& path, const LoraKeyTable& table);

// The float32 update of a weight of `shape`, times `multiplier` (a strength), as a fresh contiguous
// tensor; INVALID_ARGUMENT when it does not fit.
absl::StatusOr<torch::Tensor> LoraDelta(const LoraLayer& layer, const std::vector<int64_t>& shape,
                                        double multiplier = 1.0);

// Adds each LoRA's updates × its strength to the parameters of `module` (named under `prefix`, the
// checkpoint prefix of its keys) that belong to `component`: in float32, rounded to the parameter's
// dtype once. Parameters are replaced, never written in place (they may map a read-only file).
absl::Status ApplyLoras(torch::nn::Module& module, const std::string& prefix,
                        LoraComponent component,
                        const std::vector<std::pair<const LoraFile*, double>>& loras);

}  // namespace sd

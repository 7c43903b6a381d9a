// Resizing image and latent tensors [B, C, H, W] with ComfyUI's rules (shared by the resize nodes
// and the ControlNet hint): methods nearest-exact, bilinear, bicubic, area; crop "disabled" or
// "center" (a centre crop to the target's aspect ratio first). INVALID_ARGUMENT, prefixed with
// `kind`, for an unknown method or crop.
#pragma once

#include <torch/types.h>

#include <string>

#include "absl/status/statusor.h"

namespace sd {

inline constexpr char kResizeMethods[] = "nearest-exact (default), bilinear, bicubic, area";

absl::StatusOr<torch::Tensor> Rescale(const torch::Tensor& x, const std::string& method, int64_t w,
                                      int64_t h, const std::string& crop, const std::string& kind);

}  // namespace sd

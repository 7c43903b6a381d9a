// Resizing image and latent tensors [B, C, H, W] with ComfyUI's rules (shared by the resize nodes
// and the ControlNet hint): methods nearest-exact, bilinear, bicubic, area; crop "disabled" or
// "center" (a centre crop to the target's aspect ratio first). INVALID_ARGUMENT, prefixed with
// `kind`, for an unknown method or crop. And the one resizer of pictures the front ends use.
#pragma once

#include <torch/types.h>

#include <string>

#include "absl/status/statusor.h"

namespace sd {

inline constexpr char kResizeMethods[] = "nearest-exact (default), bilinear, bicubic, area";

absl::StatusOr<torch::Tensor> Rescale(const torch::Tensor& x, const std::string& method, int64_t w,
                                      int64_t h, const std::string& crop, const std::string& kind);

// A picture, uint8 [H, W, C], resized to uint8 [height, width, C] as every front end does it (init
// images and masks to the working size, results back to the caller's): bicubic with antialiasing,
// as PIL resizes (the reference's input pipeline); the same tensor when the size is the same.
// INVALID_ARGUMENT for anything but uint8 [H, W, C] or a size that is not positive.
absl::StatusOr<torch::Tensor> ResizePixels(const torch::Tensor& pixels, int64_t width,
                                           int64_t height);

}  // namespace sd

// Canny edges through OpenCV's imgproc (Debian's libopencv-imgproc), as ControlNet's canny
// annotator computes them (cv2.Canny on the RGB picture, 3x3 Sobel, L1 gradient): white edges on
// black.
#pragma once

#include <torch/types.h>

#include "absl/status/statusor.h"

namespace sd {

// pixels uint8 [H, W, C] (C = 1, 3 or 4; alpha dropped) -> uint8 [H, W, 3], 255 on edges, else 0.
// INVALID_ARGUMENT for other shapes or thresholds outside 0 <= low <= high <= 1023.
absl::StatusOr<torch::Tensor> CannyEdges(const torch::Tensor& pixels, int64_t low, int64_t high);

}  // namespace sd

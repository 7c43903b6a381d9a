// Image files through OpenImageIO (PNG, JPEG, TIFF, EXR, ...): read as uint8 RGB [H, W, 3], written
// from uint8 RGB with string metadata (PNG: text chunks, e.g. the "parameters" other SD tools write).
#pragma once

#include <torch/types.h>

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace sd {

// Reads any image OpenImageIO reads; grey becomes RGB, alpha is dropped, other bit depths are converted.
absl::StatusOr<torch::Tensor> ReadImageRgb8(const std::string& path);

// The values of every channel, float32 [H, W, C], at the file's precision: a 16-bit PNG or an EXR
// render pass (depth, normals) unrounded; integer formats come as [0, 1].
absl::StatusOr<torch::Tensor> ReadImageValues(const std::string& path);

// A mask as ComfyUI reads one, float32 [1, 1, H, W] in [0, 1], 1 = repaint: `channel` "alpha" gives
// 1 - alpha (transparent = repaint; all 0 without alpha), "red", "green" or "blue" the channel's
// value.
absl::StatusOr<torch::Tensor> ReadImageMask(const std::string& path, const std::string& channel);

// Writes uint8 [H, W, 3] to `path` (format from the extension) via a temporary file renamed into place.
absl::Status WriteImageRgb8(const std::string& path, const torch::Tensor& pixels,
                            const std::map<std::string, std::string>& metadata = {});

// A string attribute of an image file's header ("" when absent).
absl::StatusOr<std::string> ReadImageAttribute(const std::string& path, const std::string& name);

// The image-file node kinds (LoadImage, LoadMask, SaveImage); calling this links them into a host.
std::vector<std::string> ImageNodeKinds();

}  // namespace sd

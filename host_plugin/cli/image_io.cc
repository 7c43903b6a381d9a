#include "host_plugin/cli/image_io.h"

#include <OpenImageIO/imageio.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "nodes/base/file_util.h"

namespace sd {

namespace OIIO = OIIO_NAMESPACE;

namespace {

// [H, W, C] with the file's own channels, as uint8 or float32 (OpenImageIO converts: integer
// formats to [0, 1], float formats as stored).
absl::StatusOr<torch::Tensor> ReadImageChannels(const std::string& path, bool as_float = false) {
  std::error_code exists_error;
  if (!std::filesystem::exists(path, exists_error)) {
    // A missing input is NOT_FOUND (exit code 3 for farms: permanent, fix the job), not a bad
    // image.
    return absl::NotFoundError(absl::StrCat(path, ": no such image file"));
  }
  auto in = OIIO::ImageInput::open(path);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot read image: ", OIIO::geterror()));
  }
  const OIIO::ImageSpec& spec = in->spec();
  const int w = spec.width, h = spec.height, c = spec.nchannels;
  if (w <= 0 || h <= 0 || c <= 0 || static_cast<int64_t>(w) * h > (int64_t{1} << 28)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": unsupported image size ", w, "x", h, "x", c));
  }
  torch::Tensor raw = torch::empty({h, w, c}, as_float ? torch::kFloat32 : torch::kUInt8);
  if (!in->read_image(0, 0, 0, c, as_float ? OIIO::TypeDesc::FLOAT : OIIO::TypeDesc::UINT8,
                      raw.data_ptr())) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot decode image: ", in->geterror()));
  }
  in->close();
  return raw;
}

}  // namespace

absl::StatusOr<torch::Tensor> ReadImageRgb8(const std::string& path) {
  auto raw = ReadImageChannels(path);
  if (!raw.ok()) return raw.status();
  const int64_t h = raw->size(0), w = raw->size(1), c = raw->size(2);
  if (c == 1 || c == 2) return raw->slice(2, 0, 1).expand({h, w, 3}).contiguous();
  return raw->slice(2, 0, 3).contiguous();
}

absl::StatusOr<torch::Tensor> ReadImageValues(const std::string& path) {
  return ReadImageChannels(path, true);
}

absl::StatusOr<torch::Tensor> ReadImageMask(const std::string& path, const std::string& channel) {
  auto raw = ReadImageChannels(path);
  if (!raw.ok()) return raw.status();
  const int64_t c = raw->size(2);
  const bool has_alpha = c == 2 || c == 4;
  int64_t index = 0;
  if (channel == "alpha") {
    if (!has_alpha)
      return torch::zeros({1, 1, raw->size(0), raw->size(1)});  // opaque: nothing to repaint
    index = c - 1;
  } else if (channel == "red" || channel == "green" || channel == "blue") {
    index = c < 3                ? 0
            : channel == "red"   ? 0
            : channel == "green" ? 1
                                 : 2;  // grey: one value for all
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": mask channel '", channel, "' is not alpha, red, green or blue"));
  }
  torch::Tensor m = raw->select(2, index).to(torch::kFloat32) / 255.0f;
  if (channel == "alpha") m = 1 - m;
  return m.unsqueeze(0).unsqueeze(0).contiguous();
}

absl::Status WriteImageRgb8(const std::string& path, const torch::Tensor& pixels,
                            const std::map<std::string, std::string>& metadata) {
  if (pixels.dim() != 3 || pixels.size(2) != 3 || pixels.scalar_type() != torch::kUInt8) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": expected uint8 [H, W, 3] pixels"));
  }
  torch::Tensor px = pixels.contiguous();
  OIIO::ImageSpec spec(static_cast<int>(px.size(1)), static_cast<int>(px.size(0)), 3, OIIO::TypeDesc::UINT8);
  for (const auto& [k, v] : metadata) spec.attribute(k, v);
  auto out = OIIO::ImageOutput::create(path);
  if (!out) return absl::InvalidArgumentError(absl::StrCat(path, ": no image format for this file name: ", OIIO::geterror()));
  return WriteAtomically(path, [&](const std::string& tmp) -> absl::Status {
    if (!out->open(tmp, spec) || !out->write_image(OIIO::TypeDesc::UINT8, px.data_ptr<uint8_t>()) ||
        !out->close())
      return absl::DataLossError(absl::StrCat(path, ": cannot write image: ", out->geterror()));
    return absl::OkStatus();
  });
}

absl::StatusOr<std::string> ReadImageAttribute(const std::string& path, const std::string& name) {
  auto in = OIIO::ImageInput::open(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(path, ": cannot read image: ", OIIO::geterror()));
  return std::string(in->spec().get_string_attribute(name));
}

}  // namespace sd

// Resizing and inverting latents and images, with ComfyUI's size rules (so an imported workflow
// means the same sizes): a target width and height in pixels (0 for one of them keeps the aspect
// ratio; both 0 keep the size), or a scale factor (sizes rounded half to even, as Python's round);
// an optional centre crop to the target's aspect ratio first; methods nearest-exact, bilinear,
// bicubic, area.
//   node { kind: "LatentUpscale" name: "up" input: "latents=first.latents" input:
//   "scale=@hires_scale"
//          input: "method=@upscale_method" }
//   node { kind: "ImageScale" name: "resize" input: "image=decode.image" input: "width=@width"
//   input: "height=@height" } node { kind: "ImageInvert" name: "negative" input:
//   "image=decode.image" }
#include <torch/torch.h>

#include <cmath>
#include <optional>

#include "absl/strings/str_cat.h"
#include "nodes/base/status_macros.h"
#include "nodes/models/model_util.h"
#include "nodes/ops/image_resize.h"
#include "nodes/ops/node.h"

namespace sd {
namespace {

constexpr int64_t kMaxPixels = 16384;  // the longest side an image may be scaled to

absl::StatusOr<torch::Tensor> Interpolate(const torch::Tensor& x, const std::string& method,
                                          int64_t w, int64_t h, const std::string& kind) {
  namespace F = torch::nn::functional;
  auto o = F::InterpolateFuncOptions().size(std::vector<int64_t>{h, w});
  if (method == "nearest-exact") {  // directly: LibTorch 1.13's interpolate warns for this mode
    return at::_upsample_nearest_exact2d(x.to(torch::kFloat32), {h, w});
  } else if (method == "bilinear") {
    o.mode(torch::kBilinear).align_corners(false);
  } else if (method == "bicubic") {
    o.mode(torch::kBicubic).align_corners(false);
  } else if (method == "area") {
    o.mode(torch::kArea);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(kind, ": unknown method '", method, "' (available: ", kResizeMethods, ")"));
  }
  return F::interpolate(x.to(torch::kFloat32), o);
}

// What LatentUpscale and ImageScale read besides their tensor.
struct ScalePorts {
  static constexpr OptionalInput<std::string> kMethod{"method", kResizeMethods};
  static constexpr OptionalInput<int64_t> kWidth{"width", "pixels (0: keep the aspect ratio)"};
  static constexpr OptionalInput<int64_t> kHeight{"height", "pixels (0: keep the aspect ratio)"};
  static constexpr OptionalInput<double> kScale{"scale", "a factor, instead of width and height"};
  static constexpr OptionalInput<std::string> kCrop{"crop", "disabled (default) or center"};
};

struct ScaleRequest {
  std::string method = "nearest-exact", crop = "disabled";
  int64_t width = 0, height = 0;  // pixels; 0: from the aspect ratio
  std::optional<double> scale;
};

absl::StatusOr<ScaleRequest> ReadScale(const NodeInputs& in, const std::string& kind) {
  ScaleRequest r;
  r.method = in[ScalePorts::kMethod].value_or(r.method);
  r.crop = in[ScalePorts::kCrop].value_or(r.crop);
  r.width = in[ScalePorts::kWidth].value_or(0);
  r.height = in[ScalePorts::kHeight].value_or(0);
  r.scale = in[ScalePorts::kScale];
  if (r.scale) {
    if (in[ScalePorts::kWidth] || in[ScalePorts::kHeight]) {
      return absl::InvalidArgumentError(
          absl::StrCat(kind, ": give a scale or a width and height, not both"));
    }
    if (!(*r.scale > 0 && *r.scale <= 16)) {
      return absl::InvalidArgumentError(
          absl::StrCat(kind, ": scale ", *r.scale, " is not in (0, 16]"));
    }
  }
  if (r.width < 0 || r.height < 0 || r.width > kMaxPixels || r.height > kMaxPixels) {
    return absl::InvalidArgumentError(absl::StrCat(
        kind, ": ", r.width, "x", r.height, " is outside 0..", kMaxPixels, " pixels a side"));
  }
  return r;
}

int64_t Round(double v) {
  return static_cast<int64_t>(std::nearbyint(v));
}  // half to even, as Python

absl::Status CheckTarget(int64_t w, int64_t h, int64_t max_side, const std::string& kind) {
  if (w < 1 || h < 1 || w > max_side || h > max_side) {
    return absl::InvalidArgumentError(
        absl::StrCat(kind, ": the result would be ", w, "x", h, "; sides must be 1 to ", max_side));
  }
  return absl::OkStatus();
}

}  // namespace

// ComfyUI's common_upscale: an optional centre crop to the target's aspect ratio, then
// interpolation.
absl::StatusOr<torch::Tensor> Rescale(const torch::Tensor& x, const std::string& method, int64_t w,
                                      int64_t h, const std::string& crop, const std::string& kind) {
  torch::Tensor s = x;
  if (crop == "center") {
    const int64_t ow = x.size(3), oh = x.size(2);
    const double old_aspect = static_cast<double>(ow) / oh, new_aspect = static_cast<double>(w) / h;
    int64_t cx = 0, cy = 0;
    if (old_aspect > new_aspect)
      cx = static_cast<int64_t>(std::nearbyint((ow - ow * (new_aspect / old_aspect)) / 2));
    if (old_aspect < new_aspect)
      cy = static_cast<int64_t>(std::nearbyint((oh - oh * (old_aspect / new_aspect)) / 2));
    s = x.narrow(2, cy, oh - 2 * cy).narrow(3, cx, ow - 2 * cx);
  } else if (crop != "disabled") {
    return absl::InvalidArgumentError(
        absl::StrCat(kind, ": crop '", crop, "' is neither 'disabled' nor 'center'"));
  }
  return Interpolate(s, method, w, h, kind);
}

absl::StatusOr<torch::Tensor> ResizePixels(const torch::Tensor& pixels, int64_t width,
                                           int64_t height) {
  if (pixels.dim() != 3 || pixels.scalar_type() != torch::kUInt8 || width <= 0 || height <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("resize: expected uint8 [H, W, C] pixels and a positive size, got ",
                     DescribeTensor(pixels), " to ", width, "x", height));
  }
  if (pixels.size(0) == height && pixels.size(1) == width) return pixels;
  torch::Tensor f = pixels.permute({2, 0, 1}).unsqueeze(0).to(torch::kFloat32);
  f = torch::nn::functional::interpolate(f, torch::nn::functional::InterpolateFuncOptions()
                                                .size(std::vector<int64_t>{height, width})
                                                .mode(torch::kBicubic)
                                                .align_corners(false)
                                                .antialias(true));
  return f.squeeze(0).permute({1, 2, 0}).round().clamp(0, 255).to(torch::kUInt8).contiguous();
}

class LatentUpscale : public NodeKernel, ScalePorts {
 public:
  static constexpr Input<torch::Tensor> kLatents{"latents", v1::FLOAT32, "B,C,?,?"};
  static constexpr Output<torch::Tensor> kResized{"latents", v1::FLOAT32, "B,C,?,?"};
  static NodeContract Contract() {
    return {Ports(kLatents, kMethod, kWidth, kHeight, kScale, kCrop), Ports(kResized), nullptr,
            "resizes latents (width and height in pixels, at least 64; or a scale factor)"};
  }
  explicit LatentUpscale(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    const torch::Tensor x = in[kLatents];
    SD_ASSIGN_OR_RETURN(ScaleRequest r, ReadScale(in, "LatentUpscale"));
    const int64_t lw = x.size(3), lh = x.size(2);
    int64_t w = lw, h = lh;  // latent pixels
    if (r.scale) {
      w = Round(lw * *r.scale);
      h = Round(lh * *r.scale);
      r.crop = "disabled";
    } else if (r.width > 0 || r.height > 0) {
      int64_t pw = std::max<int64_t>(64, r.width), ph = std::max<int64_t>(64, r.height);
      if (r.width == 0) pw = std::max<int64_t>(64, Round(static_cast<double>(lw) * ph / lh));
      if (r.height == 0) ph = std::max<int64_t>(64, Round(static_cast<double>(lh) * pw / lw));
      w = pw / 8;
      h = ph / 8;
    } else {
      out.Set(kResized, x);
      return absl::OkStatus();
    }
    SD_RETURN_IF_ERROR(CheckTarget(w, h, kMaxPixels / 8, "LatentUpscale"));
    SD_ASSIGN_OR_RETURN(torch::Tensor resized, Rescale(x, r.method, w, h, r.crop, "LatentUpscale"));
    out.Set(kResized, resized);
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(LatentUpscale);

class ImageScale : public NodeKernel, ScalePorts {
 public:
  static constexpr Input<torch::Tensor> kImage{"image", v1::FLOAT32, "B,C,?,?", "[B, C, H, W]"};
  static constexpr Output<torch::Tensor> kResized{"image", v1::FLOAT32, "B,C,?,?"};
  static NodeContract Contract() {
    return {Ports(kImage, kMethod, kWidth, kHeight, kScale, kCrop), Ports(kResized), nullptr,
            "resizes an image tensor (width and height in pixels, or a scale factor)"};
  }
  explicit ImageScale(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    const torch::Tensor x = in[kImage];
    SD_ASSIGN_OR_RETURN(ScaleRequest r, ReadScale(in, "ImageScale"));
    const int64_t iw = x.size(3), ih = x.size(2);
    int64_t w = r.width, h = r.height;
    if (r.scale) {
      w = Round(iw * *r.scale);
      h = Round(ih * *r.scale);
      r.crop = "disabled";
    } else if (w == 0 && h == 0) {
      out.Set(kResized, x);
      return absl::OkStatus();
    } else if (w == 0) {
      w = std::max<int64_t>(1, Round(static_cast<double>(iw) * h / ih));
    } else if (h == 0) {
      h = std::max<int64_t>(1, Round(static_cast<double>(ih) * w / iw));
    }
    SD_RETURN_IF_ERROR(CheckTarget(w, h, kMaxPixels, "ImageScale"));
    SD_ASSIGN_OR_RETURN(torch::Tensor resized, Rescale(x, r.method, w, h, r.crop, "ImageScale"));
    out.Set(kResized, resized);
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(ImageScale);

class ImageInvert : public NodeKernel {
 public:
  static constexpr Input<torch::Tensor> kImage{"image", v1::FLOAT32, "B,C,H,W",
                                               "[B, C, H, W] in [-1, 1]"};
  static constexpr Output<torch::Tensor> kNegative{"image", v1::FLOAT32, "B,C,H,W",
                                                   "the negative: -image (1 - x on [0, 1])"};
  static NodeContract Contract() {
    return {Ports(kImage), Ports(kNegative), nullptr, "inverts an image tensor"};
  }
  explicit ImageInvert(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    out.Set(kNegative, -in[kImage].to(torch::kFloat32));
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(ImageInvert);

}  // namespace sd

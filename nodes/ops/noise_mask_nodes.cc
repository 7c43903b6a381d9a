// Inpainting as ComfyUI does it: a noise mask travels with the latents (1 = repaint), and at every
// step the model sees the known region re-noised from the original latents to the step's sigma and
// its denoised estimate there replaced by the original. Masks are float32 [1, 1, H, W] in [0, 1] at
// any resolution (resized bilinearly to the latents, as ComfyUI does).
//   node { kind: "InpaintPrepare" name: "prep" input: "image=load.image" input: "mask=mask.mask"
//   input: "grow=@grow" } loop { ...
//     node { kind: "NoiseMaskIn" name: "masked" input: "latents=@loop.latents" input:
//     "original=enc.latents"
//            input: "noise=noise.noise" input: "mask=prep.mask" input: "sigmas=s.sigmas" input:
//            "index=@loop.index" }
//     (UNetStep on masked.latents, CfgCombine)
//     node { kind: "NoiseMaskOut" name: "blend" input: "latents=@loop.latents" input:
//     "model_latents=masked.latents"
//            input: "eps=cfg.eps" input: "original=enc.latents" input: "mask=prep.mask" input:
//            "sigmas=s.sigmas" input: "index=@loop.index" } }
//   node { kind: "MaskInvert" name: "inverted" input: "mask=mask.mask" }
#include <torch/torch.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "nodes/base/status_macros.h"
#include "nodes/models/model_util.h"
#include "nodes/ops/node.h"

namespace sd {
namespace {

constexpr int64_t kMaxGrow = 256;

// What both halves of a masked step read.
struct MaskStepPorts {
  static constexpr Input<torch::Tensor> kLatents{"latents", v1::FLOAT32, "B,C,h,w",
                                                 "the loop's latents (variance-preserving)"};
  static constexpr Input<torch::Tensor> kOriginal{"original", v1::FLOAT32, "B,C,h,w",
                                                  "the latents the sampler was given"};
  static constexpr Input<torch::Tensor> kMask{"mask", v1::FLOAT32, "1,1,?,?",
                                              "[1, 1, H, W], 1 = repaint"};
  static constexpr Input<torch::Tensor> kSigmas{"sigmas", v1::FLOAT32, "?"};
  static constexpr Input<int64_t> kIndex{"index"};
};

// `mask` at the size of `like` (bilinear, as ComfyUI's prepare_mask).
torch::Tensor MaskAt(const torch::Tensor& mask, const torch::Tensor& like) {
  namespace F = torch::nn::functional;
  return F::interpolate(mask.to(torch::kFloat32),
                        F::InterpolateFuncOptions()
                            .size(std::vector<int64_t>{like.size(2), like.size(3)})
                            .mode(torch::kBilinear)
                            .align_corners(false));
}

// The step's sigma.
absl::StatusOr<double> StepSigma(const NodeInputs& in, const std::string& kind) {
  const torch::Tensor sigmas = in[MaskStepPorts::kSigmas];
  const int64_t i = in[MaskStepPorts::kIndex];
  if (i < 0 || i + 1 >= sigmas.size(0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(kind, ": step ", i, " is outside sigmas ", DescribeTensor(sigmas)));
  }
  const double s = sigmas[i].item<double>();
  if (!(s > 0) || !std::isfinite(s))
    return absl::InvalidArgumentError(absl::StrCat(kind, ": sigma ", s, " at step ", i));
  return s;
}

}  // namespace

class NoiseMaskIn : public NodeKernel, MaskStepPorts {
 public:
  static constexpr OptionalInput<torch::Tensor> kNoise{
      "noise", v1::FLOAT32, "B,C,h,w", "the sampler's initial noise (unwired: none)"};
  static constexpr Output<torch::Tensor> kSeen{"latents", v1::FLOAT32, "B,C,h,w",
                                               "what the model sees"};
  static constexpr Output<torch::Tensor> kMaskOut{
      "mask", v1::FLOAT32, "1,1,h,w", "the mask at the latents' size (what 9-channel UNets take)"};
  static NodeContract Contract() {
    return {Ports(kLatents, kOriginal, kMask, kSigmas, kIndex, kNoise), Ports(kSeen, kMaskOut),
            nullptr, "the known region re-noised from the original to the step's sigma"};
  }
  explicit NoiseMaskIn(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    const torch::Tensor x = in[kLatents];
    SD_ASSIGN_OR_RETURN(const double s, StepSigma(in, "NoiseMaskIn"));
    const torch::Tensor m = MaskAt(in[kMask], x);
    torch::Tensor known = in[kOriginal].to(torch::kFloat32);
    if (const std::optional<torch::Tensor> noise = in[kNoise])
      known = known + noise->to(torch::kFloat32) * s;
    const double scale = std::sqrt(1 + s * s);
    out.Set(kSeen, x.to(torch::kFloat32) * m + known / scale * (1 - m));
    out.Set(kMaskOut, m);
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(NoiseMaskIn);

class NoiseMaskOut : public NodeKernel, MaskStepPorts {
 public:
  static constexpr Input<torch::Tensor> kModelLatents{"model_latents", v1::FLOAT32, "B,C,h,w",
                                                      "what the model saw (NoiseMaskIn)"};
  static constexpr Input<torch::Tensor> kEps{"eps", v1::FLOAT32, "B,C,h,w",
                                             "the model's (guided) eps there"};
  static constexpr Output<torch::Tensor> kStepEps{"eps", v1::FLOAT32, "B,C,h,w",
                                                  "for the sampler step on the loop's latents"};
  static NodeContract Contract() {
    return {Ports(kLatents, kOriginal, kMask, kSigmas, kIndex, kModelLatents, kEps),
            Ports(kStepEps), nullptr,
            "the denoised estimate with the known region set to the original"};
  }
  explicit NoiseMaskOut(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    const torch::Tensor x = in[kLatents];
    SD_ASSIGN_OR_RETURN(const double s, StepSigma(in, "NoiseMaskOut"));
    const torch::Tensor m = MaskAt(in[kMask], x);
    const double scale = std::sqrt(1 + s * s);
    const torch::Tensor denoised =
        in[kModelLatents].to(torch::kFloat32) * scale - s * in[kEps].to(torch::kFloat32);
    const torch::Tensor blended = denoised * m + in[kOriginal].to(torch::kFloat32) * (1 - m);
    out.Set(kStepEps, (x.to(torch::kFloat32) * scale - blended) / s);
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(NoiseMaskOut);

// ComfyUI's VAEEncodeForInpaint before the encoder: the mask (resized to the image, rounded) greys
// out the region to repaint (0 in [-1, 1]); the noise mask is it grown by `grow` pixels (a box of
// that size), rounded.
class InpaintPrepare : public NodeKernel {
 public:
  static constexpr Input<torch::Tensor> kImage{"image", v1::FLOAT32, "B,C,H,W",
                                               "[1, 3, H, W] in [-1, 1]"};
  static constexpr Input<torch::Tensor> kMask{"mask", v1::FLOAT32, "1,1,?,?",
                                              "[1, 1, h, w], 1 = repaint"};
  static constexpr OptionalInput<int64_t> kGrow{"grow",
                                                "pixels to grow the noise mask by (default 6)"};
  static constexpr Output<torch::Tensor> kGreyed{"image", v1::FLOAT32, "B,C,H,W",
                                                 "grey where the mask is"};
  static constexpr Output<torch::Tensor> kNoiseMask{"mask", v1::FLOAT32, "1,1,H,W",
                                                    "the noise mask [1, 1, H, W] in {0, 1}"};
  static NodeContract Contract() {
    return {Ports(kImage, kMask, kGrow), Ports(kGreyed, kNoiseMask), nullptr,
            "greys out the region to repaint and grows the mask (VAEEncodeForInpaint)"};
  }
  explicit InpaintPrepare(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    const torch::Tensor image = in[kImage];
    const torch::Tensor m = MaskAt(in[kMask], image);
    const int64_t grow = in[kGrow].value_or(6);
    if (grow < 0 || grow > kMaxGrow) {
      return absl::InvalidArgumentError(
          absl::StrCat("InpaintPrepare: grow ", grow, " is not in [0, ", kMaxGrow, "]"));
    }
    const torch::Tensor rounded = m.round();
    torch::Tensor noise_mask = rounded;
    if (grow > 0) {
      const int64_t pad = grow / 2;  // ceil((grow - 1) / 2), as ComfyUI pads
      noise_mask = torch::conv2d(rounded, torch::ones({1, 1, grow, grow}), {}, 1, pad).clamp(0, 1);
      noise_mask = noise_mask.slice(2, 0, image.size(2)).slice(3, 0, image.size(3)).round();
    }
    out.Set(kGreyed, image.to(torch::kFloat32) * (1 - rounded));
    out.Set(kNoiseMask, noise_mask);
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(InpaintPrepare);

class MaskInvert : public NodeKernel {
 public:
  static constexpr Input<torch::Tensor> kMask{"mask", v1::FLOAT32, "1,1,H,W",
                                              "[1, 1, H, W] in [0, 1]"};
  static constexpr Output<torch::Tensor> kInverted{"mask", v1::FLOAT32, "1,1,H,W", "1 - mask"};
  static NodeContract Contract() {
    return {Ports(kMask), Ports(kInverted), nullptr, "inverts a mask"};
  }
  explicit MaskInvert(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    out.Set(kInverted, 1 - in[kMask].to(torch::kFloat32));
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(MaskInvert);

}  // namespace sd

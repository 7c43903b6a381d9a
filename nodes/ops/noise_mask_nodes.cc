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

absl::Status CheckMask(const torch::Tensor& m, const std::string& kind) {
  if (m.dim() != 4 || m.size(0) != 1 || m.size(1) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(kind, ": mask must be [1, 1, H, W], got ", DescribeTensor(m)));
  }
  return absl::OkStatus();
}

// The mask at the latents' size (bilinear, as ComfyUI's prepare_mask).
absl::StatusOr<torch::Tensor> MaskAt(const NodeInputs& in, const torch::Tensor& like,
                                     const std::string& kind) {
  SD_ASSIGN_OR_RETURN(torch::Tensor m, in.Tensor("mask"));
  SD_RETURN_IF_ERROR(CheckMask(m, kind));
  namespace F = torch::nn::functional;
  return F::interpolate(m.to(torch::kFloat32),
                        F::InterpolateFuncOptions()
                            .size(std::vector<int64_t>{like.size(2), like.size(3)})
                            .mode(torch::kBilinear)
                            .align_corners(false));
}

struct StepSigma {
  double s;
  torch::Tensor original;
};

// The step's sigma and the original latents (checked against the carried ones).
absl::StatusOr<StepSigma> ReadStep(const NodeInputs& in, const torch::Tensor& x,
                                   const std::string& kind) {
  SD_ASSIGN_OR_RETURN(torch::Tensor sigmas, in.Tensor("sigmas"));
  SD_ASSIGN_OR_RETURN(int64_t i, in.Int("index"));
  if (sigmas.dim() != 1 || i < 0 || i + 1 >= sigmas.size(0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(kind, ": step ", i, " is outside sigmas ", DescribeTensor(sigmas)));
  }
  const double s = sigmas[i].item<double>();
  if (!(s > 0) || !std::isfinite(s))
    return absl::InvalidArgumentError(absl::StrCat(kind, ": sigma ", s, " at step ", i));
  SD_ASSIGN_OR_RETURN(torch::Tensor original, in.Tensor("original"));
  if (original.sizes() != x.sizes()) {
    return absl::InvalidArgumentError(absl::StrCat(kind, ": original ", DescribeTensor(original),
                                                   " is not shaped like the latents ",
                                                   DescribeTensor(x)));
  }
  return StepSigma{s, original.to(torch::kFloat32)};
}

NodeContract MaskStepContract(std::vector<PortSpec> extra, PortSpec out, const std::string& doc) {
  std::vector<PortSpec> inputs{
      {"latents", TensorPort(v1::FLOAT32, 4), false, "the loop's latents (variance-preserving)"},
      {"original", TensorPort(v1::FLOAT32, 4), false, "the latents the sampler was given"},
      {"mask", TensorPort(v1::FLOAT32, 4), false, "[1, 1, H, W], 1 = repaint"},
      {"sigmas", TensorPort(v1::FLOAT32, 1)},
      {"index", ScalarPort(v1::INT)}};
  inputs.insert(inputs.end(), extra.begin(), extra.end());
  return {inputs, {out}, nullptr, doc};
}

}  // namespace

class NoiseMaskIn : public NodeKernel {
 public:
  static NodeContract Contract() {
    NodeContract c =
        MaskStepContract({{"noise", TensorPort(v1::FLOAT32, 4), true,
                           "the sampler's initial noise (unwired: none)"}},
                         {"latents", TensorPort(v1::FLOAT32, 4), false, "what the model sees"},
                         "the known region re-noised from the original to the step's sigma");
    c.outputs.push_back({"mask", TensorPort(v1::FLOAT32, 4), false,
                         "the mask at the latents' size (what 9-channel UNets take)"});
    return c;
  }
  explicit NoiseMaskIn(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    SD_ASSIGN_OR_RETURN(torch::Tensor x, in.Tensor("latents"));
    SD_ASSIGN_OR_RETURN(StepSigma st, ReadStep(in, x, "NoiseMaskIn"));
    SD_ASSIGN_OR_RETURN(torch::Tensor m, MaskAt(in, x, "NoiseMaskIn"));
    torch::Tensor known = st.original;
    if (in.Has("noise")) {
      SD_ASSIGN_OR_RETURN(torch::Tensor noise, in.Tensor("noise"));
      if (noise.sizes() != x.sizes())
        return absl::InvalidArgumentError("NoiseMaskIn: noise is not shaped like the latents");
      known = known + noise.to(torch::kFloat32) * st.s;
    }
    const double scale = std::sqrt(1 + st.s * st.s);
    out["latents"] = x.to(torch::kFloat32) * m + known / scale * (1 - m);
    out["mask"] = m;
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(NoiseMaskIn);

class NoiseMaskOut : public NodeKernel {
 public:
  static NodeContract Contract() {
    return MaskStepContract(
        {{"model_latents", TensorPort(v1::FLOAT32, 4), false, "what the model saw (NoiseMaskIn)"},
         {"eps", TensorPort(v1::FLOAT32, 4), false, "the model's (guided) eps there"}},
        {"eps", TensorPort(v1::FLOAT32, 4), false, "for the sampler step on the loop's latents"},
        "the denoised estimate with the known region set to the original");
  }
  explicit NoiseMaskOut(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    SD_ASSIGN_OR_RETURN(torch::Tensor x, in.Tensor("latents"));
    SD_ASSIGN_OR_RETURN(torch::Tensor seen, in.Tensor("model_latents"));
    SD_ASSIGN_OR_RETURN(torch::Tensor eps, in.Tensor("eps"));
    SD_ASSIGN_OR_RETURN(StepSigma st, ReadStep(in, x, "NoiseMaskOut"));
    SD_ASSIGN_OR_RETURN(torch::Tensor m, MaskAt(in, x, "NoiseMaskOut"));
    if (seen.sizes() != x.sizes() || eps.sizes() != x.sizes()) {
      return absl::InvalidArgumentError(
          "NoiseMaskOut: model_latents and eps must be shaped like the latents");
    }
    const double scale = std::sqrt(1 + st.s * st.s);
    const torch::Tensor denoised =
        seen.to(torch::kFloat32) * scale - st.s * eps.to(torch::kFloat32);
    const torch::Tensor blended = denoised * m + st.original * (1 - m);
    out["eps"] = (x.to(torch::kFloat32) * scale - blended) / st.s;
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(NoiseMaskOut);

// ComfyUI's VAEEncodeForInpaint before the encoder: the mask (resized to the image, rounded) greys
// out the region to repaint (0 in [-1, 1]); the noise mask is it grown by `grow` pixels (a box of
// that size), rounded.
class InpaintPrepare : public NodeKernel {
 public:
  static NodeContract Contract() {
    return {{{"image", TensorPort(v1::FLOAT32, 4), false, "[1, 3, H, W] in [-1, 1]"},
             {"mask", TensorPort(v1::FLOAT32, 4), false, "[1, 1, h, w], 1 = repaint"},
             {"grow", ScalarPort(v1::INT), true, "pixels to grow the noise mask by (default 6)"}},
            {{"image", TensorPort(v1::FLOAT32, 4), false, "grey where the mask is"},
             {"mask", TensorPort(v1::FLOAT32, 4), false, "the noise mask [1, 1, H, W] in {0, 1}"}},
            nullptr,
            "greys out the region to repaint and grows the mask (VAEEncodeForInpaint)"};
  }
  explicit InpaintPrepare(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    SD_ASSIGN_OR_RETURN(torch::Tensor image, in.Tensor("image"));
    SD_ASSIGN_OR_RETURN(torch::Tensor m, MaskAt(in, image, "InpaintPrepare"));
    int64_t grow = 6;
    if (in.Has("grow")) {
      SD_ASSIGN_OR_RETURN(grow, in.Int("grow"));
    }
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
    out["image"] = image.to(torch::kFloat32) * (1 - rounded);
    out["mask"] = noise_mask;
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(InpaintPrepare);

class MaskInvert : public NodeKernel {
 public:
  static NodeContract Contract() {
    return {{{"mask", TensorPort(v1::FLOAT32, 4), false, "[1, 1, H, W] in [0, 1]"}},
            {{"mask", TensorPort(v1::FLOAT32, 4), false, "1 - mask"}},
            nullptr,
            "inverts a mask"};
  }
  explicit MaskInvert(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    SD_ASSIGN_OR_RETURN(torch::Tensor m, in.Tensor("mask"));
    SD_RETURN_IF_ERROR(CheckMask(m, "MaskInvert"));
    out["mask"] = 1 - m.to(torch::kFloat32);
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(MaskInvert);

}  // namespace sd

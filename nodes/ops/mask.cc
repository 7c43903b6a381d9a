// Inpainting glue: masks as tensors, the masked image, and the latent blend of the mask-blend
// method.
//
// MaskToLatent: uint8 mask [H, W, C] (white = repaint) -> float [1, 1, H, W] in {0, 1} (`pixels`)
// and its 1/8-resolution version for the latents (`latent`: a latent pixel is repainted if any of
// its 8x8 image pixels is).
//   node { kind: "MaskToLatent" name: "mask" input: "mask=@mask" }
// MaskImage: image [1, 3, H, W] in [-1, 1] with the repainted pixels set to 0 (what 9-channel
// inpainting UNets are conditioned on). MaskBlend: after each sampler step, the known region is
// replaced by the original latents noised to the level the step reached (the sampler's next
// timestep; clean after the last step), so only the masked region is invented.
//   node { kind: "MaskBlend" name: "blend" input: "latents=step.latents" input:
//   "original=encode.latents"
//          input: "mask=mask.latent" input: "t=@loop.t" input: "steps=@steps" input:
//          "noise=blend_noise.noise" }
// MaskComposite: the final pixels, generated inside the mask and the original's outside, so the
// kept region is exactly the input (the VAE round trip would change it by a few levels); keep=0
// passes them through.
//   node { kind: "MaskComposite" name: "composite" input: "pixels=to_image.pixels" input:
//   "original=@init"
//          input: "mask=mask.pixels" input: "keep=@keep_unmasked" }
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "nodes/models/model_util.h"
#include "nodes/ops/node.h"
#include "nodes/ops/sampler_inputs.h"
#include "nodes/schedulers/samplers.h"

namespace sd {

class MaskToLatent : public NodeKernel {
 public:
  static constexpr Input<torch::Tensor> kMask{"mask", v1::UINT8, "8*h,8*w,?",
                                              "uint8 [H, W, C], white = repaint"};
  static constexpr Output<torch::Tensor> kPixels{"pixels", v1::FLOAT32, "1,1,8*h,8*w",
                                                 "[1, 1, H, W] in {0, 1}"};
  static constexpr Output<torch::Tensor> kLatent{"latent", v1::FLOAT32, "1,1,h,w",
                                                 "[1, 1, H/8, W/8] in {0, 1}"};
  static NodeContract Contract() {
    return {Ports(kMask), Ports(kPixels, kLatent), nullptr,
            "inpainting mask for pixels and latents"};
  }
  explicit MaskToLatent(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    const torch::Tensor m = in[kMask];
    if (m.size(0) == 0 || m.size(1) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("MaskToLatent: mask size ", m.size(1), "x", m.size(0), " is empty"));
    }
    torch::Tensor px =
        (m.to(torch::kFloat32).amax(2) >= 128.0f).to(torch::kFloat32).unsqueeze(0).unsqueeze(0);
    out.Set(kPixels, px);
    out.Set(kLatent, torch::max_pool2d(px, {8, 8}));
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(MaskToLatent);

class MaskImage : public NodeKernel {
 public:
  static constexpr Input<torch::Tensor> kImage{"image", v1::FLOAT32, "?,C,H,W"};
  static constexpr Input<torch::Tensor> kMask{"mask", v1::FLOAT32, "?,?,H,W", "[1, 1, H, W]"};
  static constexpr Output<torch::Tensor> kMasked{"image", v1::FLOAT32, "?,C,H,W"};
  static NodeContract Contract() {
    return {Ports(kImage, kMask), Ports(kMasked), nullptr,
            "the image with its repainted region set to 0"};
  }
  explicit MaskImage(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    out.Set(kMasked, in[kImage] * (1.0f - in[kMask]));
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(MaskImage);

class MaskBlend : public NodeKernel, SamplerPorts {
 public:
  static constexpr Input<torch::Tensor> kLatents{"latents", v1::FLOAT32, "B,C,h,w",
                                                 "after the sampler step"};
  static constexpr Input<torch::Tensor> kOriginal{"original", v1::FLOAT32, "B,C,h,w",
                                                  "the clean latents of the init image"};
  static constexpr Input<torch::Tensor> kMask{"mask", v1::FLOAT32, "?,?,h,w",
                                              "[1, 1, h, w], 1 = repaint"};
  static constexpr Input<double> kT{"t", "the step's timestep"};
  static constexpr Input<int64_t> kSteps{"steps"};
  static constexpr Input<torch::Tensor> kNoise{"noise", v1::FLOAT32, "B,C,h,w"};
  static constexpr Output<torch::Tensor> kBlended{"latents", v1::FLOAT32, "B,C,h,w"};
  static NodeContract Contract() {
    return {Ports(kLatents, kOriginal, kMask, kT, kSteps, kNoise, kSampler, kKarras, kEta),
            Ports(kBlended), nullptr, "keep the known region, invent the masked one"};
  }
  explicit MaskBlend(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    SD_ASSIGN_OR_RETURN(const SamplerSpec spec, ReadSamplerSpec(in, ""));
    const double t = in[kT];
    const torch::Tensor original = in[kOriginal], mask = in[kMask];
    const NoiseSchedule& schedule = NoiseSchedule::StableDiffusion();
    SD_ASSIGN_OR_RETURN(const std::vector<double> ts,
                        SamplerTimesteps(schedule, spec, static_cast<int>(in[kSteps])));
    auto it = std::find_if(ts.begin(), ts.end(), [&](double v) { return std::abs(v - t) < 1e-3; });
    if (it == ts.end())
      return absl::InvalidArgumentError(
          absl::StrCat("MaskBlend: timestep ", t, " is not in the schedule"));
    torch::Tensor known = original;  // clean after the last step
    if (it + 1 != ts.end()) {
      SD_ASSIGN_OR_RETURN(known, AddNoiseAt(schedule, original, *(it + 1), in[kNoise]));
    }
    out.Set(kBlended, mask * in[kLatents] + (1.0f - mask) * known);
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(MaskBlend);

class MaskComposite : public NodeKernel {
 public:
  // With keep = 0 the original and the mask are not used, so their sizes are checked only when
  // they are.
  static constexpr Input<torch::Tensor> kPixels{"pixels", v1::UINT8, "H,W,C",
                                                "the generated image, uint8 [H, W, 3]"};
  static constexpr Input<torch::Tensor> kOriginal{"original", v1::UINT8, "?,?,?",
                                                  "the init image, uint8 [H, W, 3]"};
  static constexpr Input<torch::Tensor> kMask{"mask", v1::FLOAT32, "?,?,?,?",
                                              "[1, 1, H, W], 1 = repaint"};
  static constexpr OptionalInput<int64_t> kKeep{"keep",
                                                "0: pass `pixels` through unchanged (default 1)"};
  static constexpr Output<torch::Tensor> kComposite{"pixels", v1::UINT8, "H,W,C"};
  static NodeContract Contract() {
    return {Ports(kPixels, kOriginal, kMask, kKeep), Ports(kComposite), nullptr,
            "the generated pixels inside the mask, the original's outside"};
  }
  explicit MaskComposite(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    const torch::Tensor px = in[kPixels], original = in[kOriginal], mask = in[kMask];
    if (in[kKeep] == int64_t{0}) {
      out.Set(kComposite, px);
      return absl::OkStatus();
    }
    if (px.sizes() != original.sizes() || mask.size(2) != px.size(0) ||
        mask.size(3) != px.size(1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "MaskComposite: pixels ", DescribeTensor(px), ", original ", DescribeTensor(original),
          " and mask ", DescribeTensor(mask), " do not fit together"));
    }
    const torch::Tensor repaint = mask[0][0].unsqueeze(-1) > 0.5f;  // [H, W, 1]
    out.Set(kComposite, torch::where(repaint, px, original).contiguous());
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(MaskComposite);

}  // namespace sd

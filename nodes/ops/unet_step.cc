// UNetStep: one UNet evaluation, eps = UNet(latents, t, context). Classifier-free guidance runs two
// of these (cond and uncond context) so they can go to two workers at once.
//   node { kind: "UNetStep" name: "unet_cond" input: "latents=@loop.latents" input: "t=@loop.t"
//          input: "context=clip_cond.context" }
// With a ControlNet node's `residuals` on `control`, they are added to the skip connections and the
// middle block (UNetImpl::Predict).
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "nodes/models/controlnet.h"
#include "nodes/ops/model_cache.h"
#include "nodes/ops/node.h"

namespace sd {

class UNetStep : public NodeKernel {
 public:
  static constexpr Input<torch::Tensor> kLatents{"latents", v1::FLOAT32, "B,C,h,w"};
  static constexpr Input<double> kT{"t", "timestep (fractional for k-diffusion samplers)"};
  static constexpr Input<torch::Tensor> kContext{"context", v1::FLOAT32, "?,T,D",
                                                 "[1 or B, tokens, width]"};
  // A 4-channel UNet ignores the inpainting inputs, whatever their size (an imported ComfyUI
  // workflow wires them for either kind), so their sizes are checked where they are used.
  static constexpr OptionalInput<torch::Tensor> kMask{
      "mask", v1::FLOAT32, "?,?,?,?",
      "9-channel inpainting UNets: [1 or B, 1, h, w] (a 4-channel UNet ignores it)"};
  static constexpr OptionalInput<torch::Tensor> kMaskedLatents{
      "masked_latents", v1::FLOAT32, "?,?,?,?",
      "9-channel inpainting UNets: latents of the masked image (a 4-channel UNet ignores them)"};
  static constexpr OptionalInput<torch::Tensor> kControl{
      "control", v1::FLOAT32, "?,?", "ControlNet residuals (a ControlNet node's), added"};
  static constexpr Output<torch::Tensor> kEps{"eps", v1::FLOAT32, "B,C,h,w"};
  static NodeContract Contract() {
    return {Ports(kLatents, kT, kContext, kMask, kMaskedLatents, kControl, kModelInput),
            Ports(kEps), nullptr, "one UNet evaluation (epsilon prediction)", true};
  }
  explicit UNetStep(const google::protobuf::Any&) {}
  absl::Status Open(RunContext& ctx) override {
    auto m = ctx.models->GetUnet(ctx.checkpoint, ctx.dtype, ctx.device, ctx.int8);
    if (!m.ok()) return m.status();
    unet_ = *m;
    return absl::OkStatus();
  }
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    torch::Tensor x = in[kLatents];
    // A graph made for either kind of checkpoint (an imported ComfyUI workflow) wires the
    // inpainting inputs; a 4-channel UNet has no use for them.
    const bool takes_mask = unet_->config().in_channels != x.size(1);
    const std::optional<torch::Tensor> mask = in[kMask];
    const std::optional<torch::Tensor> masked = in[kMaskedLatents];
    if (takes_mask && (mask || masked)) {
      // Inpainting UNets take [latents, mask, masked-image latents] along channels.
      if (!mask || !masked) {
        return absl::InvalidArgumentError(
            absl::StrCat("input '", mask ? kMaskedLatents.name() : kMask.name(),
                         "' is not set (an inpainting UNet takes both)"));
      }
      if ((mask->size(0) != x.size(0) && mask->size(0) != 1) ||
          (masked->size(0) != x.size(0) && masked->size(0) != 1) || mask->size(2) != x.size(2) ||
          mask->size(3) != x.size(3) || masked->size(1) != x.size(1) ||
          masked->size(2) != x.size(2) || masked->size(3) != x.size(3)) {
        return absl::InvalidArgumentError("UNetStep: mask and masked_latents must match the latents' batch and size");
      }
      const int64_t b = x.size(0);
      x = torch::cat({x, mask->expand({b, mask->size(1), x.size(2), x.size(3)}),
                      masked->expand({b, masked->size(1), x.size(2), x.size(3)})},
                     1);
    }
    std::vector<torch::Tensor> control;
    if (const std::optional<torch::Tensor> packed = in[kControl]) {
      SD_ASSIGN_OR_RETURN(control, UnpackControl(*packed, unet_->config(), x.size(2), x.size(3)));
    }
    SD_ASSIGN_OR_RETURN(
        torch::Tensor eps,
        unet_->Predict(x, torch::tensor({in[kT]}, torch::kFloat64).to(torch::kFloat32),
                       in[kContext], control));
    out.Set(kEps, eps);
    return absl::OkStatus();
  }

 private:
  UNet unet_{nullptr};
};
SD_REGISTER_NODE(UNetStep);

}  // namespace sd

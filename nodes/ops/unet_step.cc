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
  static constexpr char kLatents[] = "latents";
  static constexpr char kT[] = "t";
  static constexpr char kContext[] = "context";
  static constexpr char kEps[] = "eps";
  static constexpr char kMask[] = "mask";
  static constexpr char kMaskedLatents[] = "masked_latents";
  static constexpr char kControl[] = "control";
  static NodeContract Contract() {
    return {{{kLatents, TensorPort(v1::FLOAT32, 4)},
             {kT, ScalarPort(v1::FLOAT), false, "timestep (fractional for k-diffusion samplers)"},
             {kContext, TensorPort(v1::FLOAT32, 3)},
             {kMask, TensorPort(v1::FLOAT32, 4), true,
              "9-channel inpainting UNets: [1 or B, 1, h, w] (a 4-channel UNet ignores it)"},
             {kMaskedLatents, TensorPort(v1::FLOAT32, 4), true,
              "9-channel inpainting UNets: latents of the masked image (a 4-channel UNet ignores "
              "them)"},
             {kControl, TensorPort(v1::FLOAT32, 2), true,
              "ControlNet residuals (a ControlNet node's), added"}},
            {{kEps, TensorPort(v1::FLOAT32, 4)}},
            nullptr,
            "one UNet evaluation (epsilon prediction)",
            true};
  }
  explicit UNetStep(const google::protobuf::Any&) {}
  absl::Status Open(RunContext& ctx) override {
    auto m = ctx.models->GetUnet(ctx.checkpoint, ctx.dtype, ctx.device);
    if (!m.ok()) return m.status();
    unet_ = *m;
    return absl::OkStatus();
  }
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    auto latents = in.Tensor(kLatents);
    auto t = in.Float(kT);
    auto context = in.Tensor(kContext);
    if (!latents.ok()) return latents.status();
    if (!t.ok()) return t.status();
    if (!context.ok()) return context.status();
    torch::Tensor x = *latents;
    // A graph made for either kind of checkpoint (an imported ComfyUI workflow) wires the
    // inpainting inputs; a 4-channel UNet has no use for them.
    const bool takes_mask = unet_->config().in_channels != x.size(1);
    if (takes_mask && (in.Has(kMask) || in.Has(kMaskedLatents))) {
      // Inpainting UNets take [latents, mask, masked-image latents] along channels.
      auto mask = in.Tensor(kMask);
      auto masked = in.Tensor(kMaskedLatents);
      if (!mask.ok()) return mask.status();
      if (!masked.ok()) return masked.status();
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
    if (in.Has(kControl)) {
      auto packed = in.Tensor(kControl);
      if (!packed.ok()) return packed.status();
      auto unpacked = UnpackControl(*packed, unet_->config(), x.size(2), x.size(3));
      if (!unpacked.ok()) return unpacked.status();
      control = std::move(*unpacked);
    }
    auto eps = unet_->Predict(x, torch::tensor({*t}, torch::kFloat64).to(torch::kFloat32), *context,
                              control);
    if (!eps.ok()) return eps.status();
    out[kEps] = *eps;
    return absl::OkStatus();
  }

 private:
  UNet unet_{nullptr};
};
SD_REGISTER_NODE(UNetStep);

}  // namespace sd

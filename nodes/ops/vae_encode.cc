// VaeEncode: image [B, 3, H, W] in [-1, 1] + noise [B, 4, H/8, W/8] -> latents (sampled, scaled).
// Without noise: the posterior's mean (deterministic, as ComfyUI encodes).
//   node { kind: "VaeEncode" name: "encode" input: "image=to_tensor.image" input:
//   "noise=enc_noise.noise" }
#include "nodes/ops/vae_kernel.h"

namespace sd {

class VaeEncode : public VaeKernel {
 public:
  static constexpr Input<torch::Tensor> kImage{"image", v1::FLOAT32, "B,3,h*f,w*f",
                                               "f: the VAE's scale (8 for SD v1.x)"};
  static constexpr OptionalInput<torch::Tensor> kNoise{
      "noise", v1::FLOAT32, "B,C,h,w", "the posterior sample's noise; unwired: its mean"};
  static constexpr Output<torch::Tensor> kLatents{"latents", v1::FLOAT32, "B,C,h,w"};
  static NodeContract Contract() {
    return {Ports(kImage, kNoise, kModelInput), Ports(kLatents), v1::VaeOptions::descriptor(),
            "VAE encoder with its sampling noise as an input (tiled above 1024x1024 by default)",
            true};
  }
  explicit VaeEncode(const google::protobuf::Any& options) : VaeKernel(options) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    const torch::Tensor image = in[kImage];
    const int64_t f = vae_->downscale();
    const torch::Tensor noise = in[kNoise].value_or(torch::zeros(
        {image.size(0), vae_->config().embed_dim, image.size(2) / f, image.size(3) / f}));
    const bool tiled = Tiled(image.size(2) * image.size(3));
    SD_ASSIGN_OR_RETURN(torch::Tensor latents,
                        tiled ? vae_->EncodeTiled(image, noise, Tile() * f, Overlap() * f)
                              : vae_->Encode(image, noise));
    out.Set(kLatents, latents);
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(VaeEncode);

}  // namespace sd

// VaeEncode: image [B, 3, H, W] in [-1, 1] + noise [B, 4, H/8, W/8] -> latents (sampled, scaled).
// Without noise: the posterior's mean (deterministic, as ComfyUI encodes).
//   node { kind: "VaeEncode" name: "encode" input: "image=to_tensor.image" input:
//   "noise=enc_noise.noise" }
#include "nodes/ops/vae_kernel.h"

namespace sd {

class VaeEncode : public VaeKernel {
 public:
  static constexpr char kImage[] = "image";
  static constexpr char kNoise[] = "noise";
  static constexpr char kLatents[] = "latents";
  static NodeContract Contract() {
    return {{{kImage, TensorPort(v1::FLOAT32, 4)},
             {kNoise, TensorPort(v1::FLOAT32, 4), true,
              "the posterior sample's noise; unwired: its mean"}},
            {{kLatents, TensorPort(v1::FLOAT32, 4)}},
            v1::VaeOptions::descriptor(),
            "VAE encoder with its sampling noise as an input (tiled above 1024x1024 by default)",
            true};
  }
  explicit VaeEncode(const google::protobuf::Any& options) : VaeKernel(options) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    auto image = in.Tensor(kImage);
    if (!image.ok()) return image.status();
    const int64_t f = vae_->downscale();
    auto noise = in.Has(kNoise) ? in.Tensor(kNoise)
                                : torch::zeros({image->size(0), vae_->config().embed_dim,
                                                image->size(2) / f, image->size(3) / f});
    if (!noise.ok()) return noise.status();
    const bool tiled = Tiled(image->size(2) * image->size(3));
    auto latents = tiled ? vae_->EncodeTiled(*image, *noise, Tile() * f, Overlap() * f)
                         : vae_->Encode(*image, *noise);
    if (!latents.ok()) return latents.status();
    out[kLatents] = *latents;
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(VaeEncode);

}  // namespace sd

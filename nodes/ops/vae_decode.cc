// VaeDecode: latents -> image [B, 3, 8h, 8w], float32, about [-1, 1] (unclamped).
//   node { kind: "VaeDecode" name: "decode" input: "latents=denoise.latents" }
#include "nodes/ops/vae_kernel.h"

namespace sd {

class VaeDecode : public VaeKernel {
 public:
  static constexpr char kLatents[] = "latents";
  static constexpr char kImage[] = "image";
  static NodeContract Contract() {
    return {{{kLatents, TensorPort(v1::FLOAT32, 4)}},
            {{kImage, TensorPort(v1::FLOAT32, 4)}},
            v1::VaeOptions::descriptor(),
            "VAE decoder (tiled above 1024x1024 by default)",
            true};
  }
  explicit VaeDecode(const google::protobuf::Any& options) : VaeKernel(options) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    auto latents = in.Tensor(kLatents);
    if (!latents.ok()) return latents.status();
    const int64_t f = vae_->downscale();
    const bool tiled = Tiled(latents->size(2) * f * latents->size(3) * f);
    auto image = tiled ? vae_->DecodeTiled(*latents, Tile(), Overlap()) : vae_->Decode(*latents);
    if (!image.ok()) return image.status();
    out[kImage] = *image;
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(VaeDecode);

}  // namespace sd

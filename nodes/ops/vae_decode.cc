// VaeDecode: latents -> image [B, 3, 8h, 8w], float32, about [-1, 1] (unclamped).
//   node { kind: "VaeDecode" name: "decode" input: "latents=denoise.latents" }
#include "nodes/ops/vae_kernel.h"

namespace sd {

class VaeDecode : public VaeKernel {
 public:
  static constexpr Input<torch::Tensor> kLatents{"latents", v1::FLOAT32, "B,C,h,w"};
  static constexpr Output<torch::Tensor> kImage{"image", v1::FLOAT32, "B,3,h*f,w*f",
                                                "f: the VAE's scale (8 for SD v1.x)"};
  static NodeContract Contract() {
    return {Ports(kLatents, kModelInput), Ports(kImage), v1::VaeOptions::descriptor(),
            "VAE decoder (tiled above 1024x1024 by default)", true};
  }
  explicit VaeDecode(const google::protobuf::Any& options) : VaeKernel(options) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    const torch::Tensor latents = in[kLatents];
    const int64_t f = vae_->downscale();
    const bool tiled = Tiled(latents.size(2) * f * latents.size(3) * f);
    SD_ASSIGN_OR_RETURN(torch::Tensor image, tiled ? vae_->DecodeTiled(latents, Tile(), Overlap())
                                                   : vae_->Decode(latents));
    out.Set(kImage, image);
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(VaeDecode);

}  // namespace sd

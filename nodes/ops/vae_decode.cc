// VaeDecode: latents -> image [B, 3, 8h, 8w], float32, about [-1, 1] (unclamped).
//   node { kind: "VaeDecode" name: "decode" input: "latents=denoise.latents" }
#include "nodes/ops/model_cache.h"
#include "nodes/ops/node.h"

namespace sd {

class VaeDecode : public NodeKernel {
 public:
  static constexpr char kLatents[] = "latents";
  static constexpr char kImage[] = "image";
  static NodeContract Contract() {
    return {{{kLatents, TensorPort(v1::FLOAT32, 4)}}, {{kImage, TensorPort(v1::FLOAT32, 4)}}, nullptr, "VAE decoder"};
  }
  explicit VaeDecode(const google::protobuf::Any&) {}
  absl::Status Open(RunContext& ctx) override {
    auto m = ctx.models->GetVae(ctx.checkpoint, ctx.dtype, ctx.device);
    if (!m.ok()) return m.status();
    vae_ = *m;
    return absl::OkStatus();
  }
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    auto latents = in.Tensor(kLatents);
    if (!latents.ok()) return latents.status();
    auto image = vae_->Decode(*latents);
    if (!image.ok()) return image.status();
    out[kImage] = *image;
    return absl::OkStatus();
  }

 private:
  Vae vae_{nullptr};
};
SD_REGISTER_NODE(VaeDecode);

}  // namespace sd

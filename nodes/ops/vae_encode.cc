// VaeEncode: image [B, 3, H, W] in [-1, 1] + noise [B, 4, H/8, W/8] -> latents (sampled, scaled).
//   node { kind: "VaeEncode" name: "encode" input: "image=to_tensor.image" input: "noise=enc_noise.noise" }
#include "nodes/ops/model_cache.h"
#include "nodes/ops/node.h"

namespace sd {

class VaeEncode : public NodeKernel {
 public:
  static constexpr char kImage[] = "image";
  static constexpr char kNoise[] = "noise";
  static constexpr char kLatents[] = "latents";
  static NodeContract Contract() {
    return {{{kImage, TensorPort(v1::FLOAT32, 4)}, {kNoise, TensorPort(v1::FLOAT32, 4)}},
            {{kLatents, TensorPort(v1::FLOAT32, 4)}}, nullptr, "VAE encoder with its sampling noise as an input"};
  }
  explicit VaeEncode(const google::protobuf::Any&) {}
  absl::Status Open(RunContext& ctx) override {
    auto m = ctx.models->GetVae(ctx.checkpoint, ctx.dtype, ctx.device);
    if (!m.ok()) return m.status();
    vae_ = *m;
    return absl::OkStatus();
  }
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    auto image = in.Tensor(kImage);
    auto noise = in.Tensor(kNoise);
    if (!image.ok()) return image.status();
    if (!noise.ok()) return noise.status();
    auto latents = vae_->Encode(*image, *noise);
    if (!latents.ok()) return latents.status();
    out[kLatents] = *latents;
    return absl::OkStatus();
  }

 private:
  Vae vae_{nullptr};
};
SD_REGISTER_NODE(VaeEncode);

}  // namespace sd

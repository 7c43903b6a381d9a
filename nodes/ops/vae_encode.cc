// VaeEncode: image [B, 3, H, W] in [-1, 1] + noise [B, 4, H/8, W/8] -> latents (sampled, scaled).
//   node { kind: "VaeEncode" name: "encode" input: "image=to_tensor.image" input: "noise=enc_noise.noise" }
#include "nodes/ops/model_cache.h"
#include "nodes/ops/node.h"
#include "proto/sd/v1/nodes.pb.h"

namespace sd {

class VaeEncode : public NodeKernel {
 public:
  static constexpr char kImage[] = "image";
  static constexpr char kNoise[] = "noise";
  static constexpr char kLatents[] = "latents";
  static NodeContract Contract() {
    return {{{kImage, TensorPort(v1::FLOAT32, 4)}, {kNoise, TensorPort(v1::FLOAT32, 4)}},
            {{kLatents, TensorPort(v1::FLOAT32, 4)}}, v1::VaeOptions::descriptor(),
            "VAE encoder with its sampling noise as an input (tiled above 1024x1024 by default)", true};
  }
  explicit VaeEncode(const google::protobuf::Any& options) : options_(UnpackOptions<v1::VaeOptions>(options)) {}
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
    const int64_t f = vae_->downscale();
    const int64_t tile = (options_.tile() != 0 ? options_.tile() : 64) * f;
    const int64_t overlap = (options_.overlap() > 0 ? options_.overlap() : 16) * f;
    const bool tiled = options_.tile() > 0 || (options_.tile() == 0 && image->dim() == 4 && image->size(2) * image->size(3) > 1024 * 1024);
    auto latents = tiled ? vae_->EncodeTiled(*image, *noise, tile, overlap) : vae_->Encode(*image, *noise);
    if (!latents.ok()) return latents.status();
    out[kLatents] = *latents;
    return absl::OkStatus();
  }

 private:
  v1::VaeOptions options_;
  Vae vae_{nullptr};
};
SD_REGISTER_NODE(VaeEncode);

}  // namespace sd

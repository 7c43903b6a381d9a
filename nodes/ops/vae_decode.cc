// VaeDecode: latents -> image [B, 3, 8h, 8w], float32, about [-1, 1] (unclamped).
//   node { kind: "VaeDecode" name: "decode" input: "latents=denoise.latents" }
#include "nodes/ops/model_cache.h"
#include "nodes/ops/node.h"
#include "proto/sd/v1/nodes.pb.h"

namespace sd {

class VaeDecode : public NodeKernel {
 public:
  static constexpr char kLatents[] = "latents";
  static constexpr char kImage[] = "image";
  static NodeContract Contract() {
    return {{{kLatents, TensorPort(v1::FLOAT32, 4)}}, {{kImage, TensorPort(v1::FLOAT32, 4)}}, v1::VaeOptions::descriptor(),
            "VAE decoder (tiled above 1024x1024 by default)", true};
  }
  explicit VaeDecode(const google::protobuf::Any& options) : options_(UnpackOptions<v1::VaeOptions>(options)) {}
  absl::Status Open(RunContext& ctx) override {
    auto m = ctx.models->GetVae(ctx.checkpoint, ctx.dtype, ctx.device);
    if (!m.ok()) return m.status();
    vae_ = *m;
    return absl::OkStatus();
  }
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    auto latents = in.Tensor(kLatents);
    if (!latents.ok()) return latents.status();
    const int64_t tile = options_.tile() != 0 ? options_.tile() : 64;
    const int64_t overlap = options_.overlap() > 0 ? options_.overlap() : 16;
    const bool tiled = options_.tile() > 0 || (options_.tile() == 0 && latents->dim() == 4 && latents->size(2) * latents->size(3) > 128 * 128);
    auto image = tiled ? vae_->DecodeTiled(*latents, tile, overlap) : vae_->Decode(*latents);
    if (!image.ok()) return image.status();
    out[kImage] = *image;
    return absl::OkStatus();
  }

 private:
  v1::VaeOptions options_;
  Vae vae_{nullptr};
};
SD_REGISTER_NODE(VaeDecode);

}  // namespace sd

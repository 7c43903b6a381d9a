// What VaeDecode and VaeEncode share: the VAE from the run's model cache, and the tiling their
// VaeOptions ask for (tile > 0: always, in tiles of that many latent pixels; 0: automatically above
// 1024x1024 pixels, in 64-latent-pixel tiles; < 0: never).
#pragma once

#include "nodes/ops/model_cache.h"
#include "nodes/ops/node.h"
#include "proto/sd/v1/nodes.pb.h"

namespace sd {

class VaeKernel : public NodeKernel {
 public:
  explicit VaeKernel(const google::protobuf::Any& options)
      : options_(UnpackOptions<v1::VaeOptions>(options)) {}
  absl::Status Open(RunContext& ctx) override {
    auto m = ctx.models->GetVae(ctx.checkpoint, ctx.dtype, ctx.device);
    if (!m.ok()) return m.status();
    vae_ = *m;
    return absl::OkStatus();
  }

 protected:
  // Tile side and overlap in latent pixels.
  int64_t Tile() const { return options_.tile() != 0 ? options_.tile() : 64; }
  int64_t Overlap() const { return options_.overlap() > 0 ? options_.overlap() : 16; }
  // Whether an image of `pixels` full-resolution pixels is processed in tiles.
  bool Tiled(int64_t pixels) const {
    return options_.tile() > 0 || (options_.tile() == 0 && pixels > 1024 * 1024);
  }

  v1::VaeOptions options_;
  Vae vae_{nullptr};
};

}  // namespace sd

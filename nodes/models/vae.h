// The KL autoencoder of SD v1.x (LDM's AutoencoderKL): an encoder from images in [-1, 1] to 4-channel
// latents at 1/8 resolution, and a decoder back. Parameters are named as in the checkpoint under
// first_stage_model. The sampling noise of the encoder is an input, so the node is a pure function.
//
//   Vae vae(config.vae);
//   SD_RETURN_IF_ERROR(LoadWeights(*vae, checkpoint, kVaePrefix, torch::kFloat32));
//   SD_ASSIGN_OR_RETURN(torch::Tensor image, vae->Decode(latents));          // [B, 3, 8h, 8w], raw
//   SD_ASSIGN_OR_RETURN(torch::Tensor latents, vae->Encode(image, noise));  // scaled by 0.18215
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>

#include "absl/status/statusor.h"
#include "nodes/models/layers.h"
#include "nodes/weights/sd_config.h"

namespace sd {

class VaeResnetImpl : public torch::nn::Module {
 public:
  VaeResnetImpl(int64_t in, int64_t out, double eps);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  nn::GroupNorm norm1_, norm2_;
  nn::Conv2d conv1_, conv2_, nin_shortcut_{nullptr};
};
TORCH_MODULE(VaeResnet);

// Single-head self-attention over all pixels.
class VaeAttentionImpl : public torch::nn::Module {
 public:
  VaeAttentionImpl(int64_t channels, double eps);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  nn::GroupNorm norm_;
  nn::Conv2d q_, k_, v_, proj_out_;
};
TORCH_MODULE(VaeAttention);

// mid.block_1, mid.attn_1, mid.block_2
class VaeMidImpl : public torch::nn::Module {
 public:
  VaeMidImpl(int64_t channels, double eps);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  VaeResnet block_1_, block_2_;
  VaeAttention attn_1_;
};
TORCH_MODULE(VaeMid);

class VaeEncoderImpl : public torch::nn::Module {
 public:
  explicit VaeEncoderImpl(const VaeConfig& c);
  torch::Tensor forward(const torch::Tensor& image);  // -> moments [B, 2z, H/8, W/8]

 private:
  nn::Conv2d conv_in_, conv_out_;
  std::vector<std::vector<VaeResnet>> blocks_;
  std::vector<nn::Conv2d> downsample_;
  VaeMid mid_;
  nn::GroupNorm norm_out_;
};
TORCH_MODULE(VaeEncoder);

class VaeDecoderImpl : public torch::nn::Module {
 public:
  explicit VaeDecoderImpl(const VaeConfig& c);
  torch::Tensor forward(const torch::Tensor& z);

 private:
  nn::Conv2d conv_in_, conv_out_;
  VaeMid mid_;
  std::vector<std::vector<VaeResnet>> blocks_;  // by level, 0 = full resolution
  std::vector<nn::Conv2d> upsample_;            // by level; null at level 0
  nn::GroupNorm norm_out_;
};
TORCH_MODULE(VaeDecoder);

class VaeImpl : public torch::nn::Module {
 public:
  explicit VaeImpl(const VaeConfig& config);
  // latents [B, z, h, w] -> image [B, 3, 8h, 8w] (float32, unclamped: about [-1, 1]).
  absl::StatusOr<torch::Tensor> Decode(const torch::Tensor& latents);
  // image [B, 3, H, W] in [-1, 1], H and W multiples of 8; noise [B, z, H/8, W/8] ~ N(0, 1) ->
  // (mean + exp(0.5 * clamp(logvar, -30, 20)) * noise) * scale_factor.
  absl::StatusOr<torch::Tensor> Encode(const torch::Tensor& image, const torch::Tensor& noise);
  // The same, in overlapping tiles of `tile` latent pixels (`overlap` of them shared with each neighbour,
  // blended with linear ramps), so memory stays that of one tile whatever the image size. Tiles are decoded
  // independently (GroupNorm statistics per tile), so the result differs slightly from Decode near seams.
  absl::StatusOr<torch::Tensor> DecodeTiled(const torch::Tensor& latents, int64_t tile = 64, int64_t overlap = 16);
  // Encode in overlapping tiles of `tile` image pixels (`overlap` shared; both multiples of 8).
  absl::StatusOr<torch::Tensor> EncodeTiled(const torch::Tensor& image, const torch::Tensor& noise, int64_t tile = 512,
                                            int64_t overlap = 128);
  // For training (no checks, no inference mode, autograd records): image in [-1, 1] -> moments
  // [B, 2 * embed_dim, H/f, W/f] (mean, then log-variance), and an unscaled latent z -> image.
  torch::Tensor EncodeMoments(const torch::Tensor& image);
  torch::Tensor DecodeUnscaled(const torch::Tensor& z);
  const VaeConfig& config() const { return config_; }
  int64_t downscale() const { return int64_t{1} << (config_.ch_mult.size() - 1); }

 private:
  VaeConfig config_;
  VaeEncoder encoder_;
  VaeDecoder decoder_;
  nn::Conv2d quant_conv_, post_quant_conv_;
};
TORCH_MODULE(Vae);

}  // namespace sd

// The denoising UNet of SD v1.x (LDM's UNetModel): ε-prediction from latents, a timestep and a text
// context. Residual blocks conditioned on a sinusoidal timestep embedding, spatial transformers with self-
// and cross-attention and GEGLU feed-forward at the attention levels, skip connections between the down
// and up paths. Hyper-parameters come from the detected UNetConfig, so SD v1.5, 9-channel inpainting and
// the tiny test configuration build from the same code. Parameters carry the checkpoint names under
// model.diffusion_model.
//
//   UNet unet(config.unet);
//   SD_RETURN_IF_ERROR(LoadWeights(*unet, checkpoint, kUNetPrefix, torch::kBFloat16));
//   SD_ASSIGN_OR_RETURN(torch::Tensor eps, unet->Predict(latents, timestep, context));
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>

#include "absl/status/statusor.h"
#include "nodes/models/layers.h"
#include "nodes/weights/sd_config.h"

namespace sd {

// Sinusoidal embedding of timesteps [N] -> [N, dim]: cos of t * 10000^(-i/half) for i < half, then sin.
torch::Tensor TimestepEmbedding(const torch::Tensor& timesteps, int64_t dim);

class ResBlockImpl : public torch::nn::Module {
 public:
  ResBlockImpl(int64_t in, int64_t out, int64_t emb, double eps);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& emb);

 private:
  nn::GroupNorm in_norm_, out_norm_;
  nn::Conv2d in_conv_, out_conv_, skip_{nullptr};
  nn::Linear emb_linear_;
};
TORCH_MODULE(ResBlock);

class TransformerBlockImpl : public torch::nn::Module {
 public:
  TransformerBlockImpl(int64_t channels, int64_t context_dim, int64_t heads);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context);  // x: [B, HW, C]

 private:
  int64_t heads_;
  nn::Linear q1_, k1_, v1_, out1_, q2_, k2_, v2_, out2_, geglu_, ff_out_;
  nn::LayerNorm norm1_, norm2_, norm3_;
};
TORCH_MODULE(TransformerBlock);

class SpatialTransformerImpl : public torch::nn::Module {
 public:
  SpatialTransformerImpl(int64_t channels, const UNetConfig& c);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context);

 private:
  nn::GroupNorm norm_;
  nn::Conv2d proj_in_, proj_out_;
  std::vector<TransformerBlock> blocks_;
};
TORCH_MODULE(SpatialTransformer);

// One entry of input_blocks / middle_block / output_blocks: layers applied in order, each given what it
// needs (the timestep embedding for ResBlocks, the context for transformers).
class UNetStageImpl : public torch::nn::Module {
 public:
  UNetStageImpl() = default;
  void AddResBlock(ResBlock b);
  void AddTransformer(SpatialTransformer t);
  void AddDownsample(int64_t channels);
  void AddUpsample(int64_t channels);
  void AddConv(nn::Conv2d c);
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& emb, const torch::Tensor& context);

 private:
  enum class Kind { kRes, kTransformer, kDown, kUp, kConv };
  std::string NextName() { return std::to_string(layers_.size()); }
  std::vector<std::pair<Kind, std::shared_ptr<torch::nn::Module>>> layers_;
};
TORCH_MODULE(UNetStage);

// The UNet's time embedding, input blocks and middle block, registered on `owner` under their
// checkpoint names (time_embed, input_blocks, middle_block): the part a ControlNet copies.
struct UNetTrunk {
  UNetTrunk(torch::nn::Module& owner, const UNetConfig& c);
  // The timestep embedding [N, 4 * model_channels] in `dtype`.
  torch::Tensor Embed(const torch::Tensor& timesteps, torch::ScalarType dtype);
  int64_t model_channels;
  nn::Linear time_embed_0, time_embed_2;
  std::vector<UNetStage> input_blocks;
  UNetStage middle_block;
  std::vector<int64_t> skip_channels;  // of each input block's output
};

// The shapes [channels, height, width] of the 13 (for SD v1.x) ControlNet residuals for latents of
// h x w: one per input block (its output, the skip connection), then the middle block's.
std::vector<std::vector<int64_t>> ControlResidualShapes(const UNetConfig& c, int64_t h, int64_t w);

class UNetImpl : public torch::nn::Module {
 public:
  explicit UNetImpl(const UNetConfig& config);
  // latents [B, in_channels, h, w] (h, w multiples of 8: the UNet halves them three times),
  // timesteps of B or 1 values (int or float), context [B or 1, T, context_dim] -> eps [B,
  // out_channels, h, w], float32. `control`: none, or ControlNet residuals of ControlResidualShapes
  // (batch B or 1), already scaled; added to the middle block's output and to each skip connection
  // before it is concatenated.
  absl::StatusOr<torch::Tensor> Predict(const torch::Tensor& latents,
                                        const torch::Tensor& timesteps,
                                        const torch::Tensor& context,
                                        const std::vector<torch::Tensor>& control = {});
  // x and context already on the weights' device in the activation dtype (nn::ActivationDtype), as Predict
  // passes them.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& timesteps,
                        const torch::Tensor& context,
                        const std::vector<torch::Tensor>& control = {});
  const UNetConfig& config() const { return config_; }
  // How much h and w must be divisible by.
  int64_t multiple() const { return int64_t{1} << (config_.channel_mult.size() - 1); }

 private:
  absl::Status CheckControl(const std::vector<torch::Tensor>& control,
                            const torch::Tensor& latents) const;
  UNetConfig config_;
  UNetTrunk trunk_;
  std::vector<UNetStage> output_blocks_;
  nn::GroupNorm out_norm_;
  nn::Conv2d out_conv_;
};
TORCH_MODULE(UNet);

}  // namespace sd

// ControlNet for SD v1.x (lllyasviel's cldm.py): a copy of the UNet's encoder that reads a hint
// image (edges, depth, normals, a pose) and returns one residual per skip connection and one for
// the middle block, which the UNet adds (UNetImpl::Predict's `control`). Parameters carry the
// checkpoint's unprefixed names (controlnet_layout.h maps the other layouts onto them).
//
//   ControlNet net(file.config);
//   SD_RETURN_IF_ERROR(LoadWeights(*net, checkpoint, key_of, torch::kFloat32));
//   SD_ASSIGN_OR_RETURN(std::vector<torch::Tensor> residuals, net->Predict(latents, hint, t,
//   context)); SD_ASSIGN_OR_RETURN(torch::Tensor eps, unet->Predict(latents, t, context,
//   Scaled(residuals, 0.8)));
#pragma once

#include <torch/nn/module.h>

#include <vector>

#include "absl/status/statusor.h"
#include "nodes/models/unet.h"
#include "nodes/weights/controlnet_layout.h"

namespace sd {

class ControlNetImpl : public torch::nn::Module {
 public:
  explicit ControlNetImpl(const ControlNetConfig& config);
  // latents [B, 4, h, w], hint [B or 1, hint_channels, 8h, 8w] in [0, 1], timesteps of B or 1
  // values, context [B or 1, T, context_dim] -> the residuals, unscaled, float32, of
  // ControlResidualShapes.
  absl::StatusOr<std::vector<torch::Tensor>> Predict(const torch::Tensor& latents,
                                                     const torch::Tensor& hint,
                                                     const torch::Tensor& timesteps,
                                                     const torch::Tensor& context);
  std::vector<torch::Tensor> forward(const torch::Tensor& x, const torch::Tensor& hint,
                                     const torch::Tensor& timesteps, const torch::Tensor& context);
  const ControlNetConfig& config() const { return config_; }

 private:
  ControlNetConfig config_;
  UNetTrunk trunk_;
  std::vector<nn::Conv2d> hint_convs_, zero_convs_;
  nn::Conv2d middle_out_;
};
TORCH_MODULE(ControlNet);

// The scales of the residuals: `strength` on each, or in guess mode ("control mode: ControlNet is
// more important") strength * 0.825^(12 - i) for residual i of 13, as the original code.
std::vector<double> ControlScales(size_t count, double strength, bool guess_mode);

// Residuals as one tensor [B, sum of C*H*W] (so they travel as one port) and back, checked against
// the shapes a UNet of `config` expects for latents of h x w.
torch::Tensor PackControl(const std::vector<torch::Tensor>& residuals);
absl::StatusOr<std::vector<torch::Tensor>> UnpackControl(const torch::Tensor& packed,
                                                         const UNetConfig& config, int64_t h,
                                                         int64_t w);

}  // namespace sd

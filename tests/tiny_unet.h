// A tiny UNet (SdConfig::Tiny) with random weights and inputs, for comparing two ways of running
// its layers on one prediction (winograd_test, plain_conv_test). Seeded: the same values every
// time.
#pragma once

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "nodes/models/unet.h"
#include "nodes/weights/sd_config.h"

namespace sd::testing {

class RandomTinyUNet {
 public:
  RandomTinyUNet() : config_(SdConfig::Tiny()), unet_(config_.unet) {
    torch::manual_seed(4);
    for (torch::Tensor& p : unet_->parameters()) p.normal_(0, p.dim() > 1 ? 0.05 : 0.5);
    latents_ = torch::randn({2, config_.unet.in_channels, 16, 16});
    context_ = torch::randn({2, 77, config_.unet.context_dim});
  }
  // The prediction at timestep 500, as the layers run now (call in c10::InferenceMode).
  absl::StatusOr<torch::Tensor> Predict() {
    return unet_->Predict(latents_, torch::tensor({500}), context_);
  }
  // |b - a| / |a|.
  static double RelativeDifference(const torch::Tensor& a, const torch::Tensor& b) {
    return ((b - a).norm() / a.norm()).item<double>();
  }

 private:
  SdConfig config_;
  UNet unet_;
  torch::Tensor latents_, context_;
};

}  // namespace sd::testing

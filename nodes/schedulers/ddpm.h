// DDPM sampling exactly as the reference implementation does it: inference timesteps
// arange(N) * (1000 // N) reversed; img2img strength skips the first N - int(N * strength) of them;
// add_noise and the posterior step with the variance clamped at 1e-20, all in float32.
#pragma once

#include "nodes/schedulers/sampler.h"

namespace sd {

// arange(N) * (train_steps // N), reversed.
std::vector<int64_t> DdpmTimesteps(int num_inference_steps, int train_steps = 1000);
// The timesteps an img2img run at `strength` in (0, 1] keeps: the last int(N * strength).
std::vector<int64_t> KeepForStrength(const std::vector<int64_t>& timesteps, double strength);

class DdpmSampler : public Sampler {
 public:
  // INVALID_ARGUMENT when steps is not in [1, train steps] or strength is not in (0, 1].
  static absl::StatusOr<std::unique_ptr<DdpmSampler>> Create(const NoiseSchedule& schedule, int num_inference_steps,
                                                             double strength = 1.0);
  std::string name() const override { return "ddpm"; }
  const std::vector<int64_t>& timesteps() const override { return timesteps_; }
  absl::StatusOr<torch::Tensor> Step(const torch::Tensor& latents, const torch::Tensor& eps, int64_t t,
                                     const torch::Tensor& noise) const override;
  bool NeedsNoise(int64_t t) const override { return t > 0; }

 private:
  DdpmSampler(NoiseSchedule schedule, int num_inference_steps, std::vector<int64_t> timesteps)
      : schedule_(std::move(schedule)), steps_(num_inference_steps), timesteps_(std::move(timesteps)) {}
  NoiseSchedule schedule_;
  int steps_;
  std::vector<int64_t> timesteps_;
};

}  // namespace sd

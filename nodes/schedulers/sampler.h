// The noise schedule of SD v1.x and the samplers that walk it. Every sampler takes its randomness as an
// input tensor (nodes are pure functions), behind one interface:
//   SamplerStep(latents, eps, t, noise) -> latents at the previous timestep.
#pragma once

#include <torch/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace sd {

// Scaled-linear betas (linspace(sqrt(start), sqrt(end), steps)^2, float32) and their cumulative products.
struct NoiseSchedule {
  static NoiseSchedule ScaledLinear(double beta_start = 0.00085, double beta_end = 0.012, int steps = 1000);
  // SD v1.x's schedule (ScaledLinear() with its defaults), built once per process and shared.
  static const NoiseSchedule& StableDiffusion();
  int train_steps() const { return static_cast<int>(alphas_cumprod.size(0)); }
  torch::Tensor betas;           // [steps] float32
  torch::Tensor alphas_cumprod;  // [steps] float32
};

// Forward diffusion to timestep t: sqrt(abar_t) * x0 + sqrt(1 - abar_t) * noise (float32).
absl::StatusOr<torch::Tensor> AddNoise(const NoiseSchedule& schedule, const torch::Tensor& x0, int64_t t,
                                       const torch::Tensor& noise);

class Sampler {
 public:
  virtual ~Sampler() = default;
  virtual std::string name() const = 0;
  // The timesteps visited, first (noisiest) first.
  virtual const std::vector<int64_t>& timesteps() const = 0;
  // One step from timestep `t` (one of timesteps()) given the model's eps; `noise` is used where the
  // sampler adds noise (ignored, and may be undefined, where it does not).
  virtual absl::StatusOr<torch::Tensor> Step(const torch::Tensor& latents, const torch::Tensor& eps, int64_t t,
                                             const torch::Tensor& noise) const = 0;
  // Whether Step at `t` consumes `noise`.
  virtual bool NeedsNoise(int64_t t) const = 0;
};

}  // namespace sd

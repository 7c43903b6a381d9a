// Samplers beyond DDPM, with the conventions of the wider ecosystem (diffusers / k-diffusion): DDIM (eta),
// Euler, Euler ancestral and DPM++ 2M, with uniform ("linspace") or Karras sigma spacing.
//
// Latents are always carried in the variance-preserving form DDPM uses (x_t = sqrt(abar) x0 + sqrt(1 - abar)
// noise), which is exactly the UNet's input: k-diffusion samplers work on x_ve = x_t * sqrt(1 + sigma^2) and
// convert inside each step. So every sampler starts from standard-normal latents and shares one graph; this
// is the same arithmetic as diffusers' scale_model_input / init_noise_sigma.
#pragma once

#include <torch/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nodes/schedulers/sampler.h"

namespace sd {

struct SamplerSpec {
  std::string name = "ddpm";  // ddpm, ddim, euler, euler_a, dpmpp_2m
  bool karras = false;        // Karras sigma spacing (rho 7); euler, euler_a and dpmpp_2m
  double eta = 0.0;           // DDIM's eta: 0 deterministic, 1 DDPM-like
};

// INVALID_ARGUMENT naming the known samplers when `spec` is not one of them.
absl::Status CheckSamplerSpec(const SamplerSpec& spec);
std::vector<std::string> SamplerNames();

// The model timesteps a sampler visits for `steps` steps, noisiest first (fractional for the k-diffusion
// samplers), keeping the last int(steps * strength) for img2img.
absl::StatusOr<std::vector<double>> SamplerTimesteps(const NoiseSchedule& schedule, const SamplerSpec& spec, int steps,
                                                     double strength = 1.0);

// Whether the step at timestep `t` consumes noise.
bool SamplerNeedsNoise(const NoiseSchedule& schedule, const SamplerSpec& spec, int steps, double t);

struct SamplerStepResult {
  torch::Tensor latents;   // at the next timestep
  torch::Tensor denoised;  // the step's x0 estimate (history for multistep samplers)
};

// One step from timestep `t` (one of SamplerTimesteps(..., strength = 1)). `history` is the previous step's
// denoised estimate for multistep samplers (DPM++ 2M); leave it undefined on a run's first step.
absl::StatusOr<SamplerStepResult> SamplerStep(const NoiseSchedule& schedule, const SamplerSpec& spec, int steps, double t,
                                              const torch::Tensor& latents, const torch::Tensor& eps,
                                              const torch::Tensor& noise, const torch::Tensor& history);

// Forward diffusion to a possibly fractional timestep (abar interpolated through log sigma): for img2img with
// any sampler. Integer timesteps give AddNoise()'s result.
absl::StatusOr<torch::Tensor> AddNoiseAt(const NoiseSchedule& schedule, const torch::Tensor& x0, double t,
                                         const torch::Tensor& noise);

}  // namespace sd

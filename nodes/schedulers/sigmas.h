// Sampling over an explicit list of sigmas, with ComfyUI's conventions, so that a ComfyUI
// workflow's KSampler means the same numbers here: its schedulers (normal, karras, exponential,
// simple, ddim_uniform, sgm_uniform), its `denoise` (the last `steps` sigmas of a longer schedule),
// its KSamplerAdvanced range (start/end step, leftover noise), its model timestep of a sigma (the
// nearest training step in log sigma) and its sampler steps (euler, euler_ancestral, dpmpp_2m, ddim
// = euler, ddpm), all on latents carried in the variance-preserving form the UNet takes (x_ve /
// sqrt(1 + s^2)).
#pragma once

#include <torch/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nodes/schedulers/sampler.h"
#include "nodes/schedulers/sigma_names.h"

namespace sd {

std::vector<std::string> SigmaSchedulerNames();  // normal, karras, exponential, simple, ...
std::vector<std::string> SigmaSamplerNames();    // euler, euler_ancestral, dpmpp_2m, ddim, ddpm

// Which part of a schedule a sampler runs (ComfyUI's KSampler and KSamplerAdvanced).
struct SigmaRange {
  double denoise = 1.0;             // < 1: the last `steps` sigmas of int(steps / denoise)
  int start = 0;                    // start_at_step
  int end = 10000;                  // end_at_step
  bool force_full_denoise = false;  // ending early: the last sigma becomes 0 (no leftover noise)
};

// The sigmas a sampler visits, noisiest first, with the final one (0 unless the range ends early):
// N + 1 values for N steps. INVALID_ARGUMENT for an unknown scheduler, steps outside [1, 10000], a
// denoise outside (0, 1] or a range that leaves no step.
absl::StatusOr<std::vector<double>> ScheduleSigmas(const NoiseSchedule& schedule,
                                                   const std::string& scheduler, int steps,
                                                   const SigmaRange& range = {});

// sigma_k = sqrt((1 - abar_k) / abar_k) of the training schedule, in double.
std::vector<double> TrainingSigmas(const NoiseSchedule& schedule);

// The model timestep ComfyUI evaluates the UNet at for `sigma`: the nearest training step in log
// sigma.
// `train`: TrainingSigmas(schedule), computed once by the caller for a whole schedule.
double TimestepOfSigmaNearest(const std::vector<double>& train, double sigma);
// The largest sigma of the training schedule (a full-denoise start).
double MaxSigma(const NoiseSchedule& schedule);

// Whether a step to `sigma_next` draws noise (euler_ancestral and ddpm, except the last step).
bool SigmaStepNeedsNoise(const std::string& sampler, double sigma_next);

struct SigmaStepResult {
  torch::Tensor latents;   // variance-preserving, at sigma_next
  torch::Tensor denoised;  // the step's x0 estimate (history for dpmpp_2m)
};

// One step from `sigma` to `sigma_next` of latents carried in variance-preserving form, given the
// model's eps there. `sigma_prev` (0: none) and `history` (the previous step's denoised) feed
// dpmpp_2m.
absl::StatusOr<SigmaStepResult> SigmaStep(const std::string& sampler, double sigma_prev,
                                          double sigma, double sigma_next,
                                          const torch::Tensor& latents, const torch::Tensor& eps,
                                          const torch::Tensor& noise, const torch::Tensor& history);

}  // namespace sd

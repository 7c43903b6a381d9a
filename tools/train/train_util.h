// Small pieces both trainers (sd-train's and the ControlNet's) use: step seeds, the learning-rate
// schedule, the VAE posterior, durations.
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <string>

#include "absl/strings/str_format.h"

namespace sd::train {

using Clock = std::chrono::steady_clock;
inline double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// A seed for (seed, phase, step): the data and noise of a step do not depend on where a run
// resumed.
inline uint64_t StepSeed(uint64_t seed, int phase, int64_t step) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(phase) * 0xBF58476D1CE4E5B9ull +
               static_cast<uint64_t>(step) * 0x94D049BB133111EBull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// The encoder's Gaussian from its moments [B, 2e, h, w]: mean and log-variance (clamped as LDM
// does).
struct Posterior {
  Posterior(const torch::Tensor& moments, int64_t e)
      : mean(moments.slice(1, 0, e)), logvar(moments.slice(1, e).clamp(-30.0, 20.0)) {}
  torch::Tensor Sample() const { return mean + torch::exp(0.5 * logvar) * torch::randn_like(mean); }
  torch::Tensor mean, logvar;
};

// Linear warm-up, then a cosine down to a tenth of the peak.
inline double LearningRate(double peak, int64_t step, int64_t total, int warmup) {
  if (step < warmup) return peak * (step + 1) / warmup;
  const double x = static_cast<double>(step - warmup) / std::max<int64_t>(1, total - warmup);
  return peak * (0.1 + 0.9 * 0.5 * (1.0 + std::cos(3.14159265358979 * std::min(1.0, x))));
}

inline void SetLearningRate(torch::optim::AdamW& opt, double lr) {
  for (auto& group : opt.param_groups())
    static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
}

inline std::string Duration(double s) {
  const int64_t t = static_cast<int64_t>(s);
  return t >= 3600 ? absl::StrFormat("%dh%02dm", t / 3600, t / 60 % 60)
                   : absl::StrFormat("%dm%02ds", t / 60, t % 60);
}

}  // namespace sd::train

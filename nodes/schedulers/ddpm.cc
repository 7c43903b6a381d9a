#include "nodes/schedulers/ddpm.h"

#include <torch/torch.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "nodes/models/model_util.h"

namespace sd {

NoiseSchedule NoiseSchedule::ScaledLinear(double beta_start, double beta_end, int steps) {
  NoiseSchedule s;
  s.betas = torch::linspace(std::sqrt(beta_start), std::sqrt(beta_end), steps, torch::kFloat32).pow(2);
  s.alphas_cumprod = torch::cumprod(1.0 - s.betas, 0);
  return s;
}

const NoiseSchedule& NoiseSchedule::StableDiffusion() {
  static const NoiseSchedule* schedule = new NoiseSchedule(ScaledLinear());
  return *schedule;
}

std::vector<int64_t> DdpmTimesteps(int n, int train_steps) {
  std::vector<int64_t> t;
  const int64_t ratio = train_steps / n;
  for (int i = n - 1; i >= 0; --i) t.push_back(i * ratio);
  return t;
}

std::vector<int64_t> KeepForStrength(const std::vector<int64_t>& timesteps, double strength) {
  const int n = static_cast<int>(timesteps.size());
  const int start = n - static_cast<int>(n * strength);
  return std::vector<int64_t>(timesteps.begin() + std::clamp(start, 0, n), timesteps.end());
}

absl::StatusOr<std::unique_ptr<DdpmSampler>> DdpmSampler::Create(const NoiseSchedule& schedule, int steps,
                                                                 double strength) {
  if (steps < 1 || steps > schedule.train_steps()) {
    return absl::InvalidArgumentError(
        absl::StrCat("ddpm: steps must be between 1 and ", schedule.train_steps(), ", got ", steps));
  }
  if (!(strength > 0.0 && strength <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat("ddpm: strength must be in (0, 1], got ", strength));
  }
  std::vector<int64_t> t = KeepForStrength(DdpmTimesteps(steps, schedule.train_steps()), strength);
  if (t.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("ddpm: strength ", strength, " keeps none of the ", steps, " steps; raise strength or steps"));
  }
  return std::unique_ptr<DdpmSampler>(new DdpmSampler(schedule, steps, std::move(t)));
}

namespace {

absl::Status CheckLatentPair(const char* op, const torch::Tensor& a, const char* a_name, const torch::Tensor& b,
                             const char* b_name) {
  if (!a.defined() || !b.defined() || !a.is_floating_point() || !b.is_floating_point() || a.sizes() != b.sizes()) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", a_name, " and ", b_name,
                                                   " must be float tensors of one shape, got ", DescribeTensor(a),
                                                   " and ", DescribeTensor(b)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<torch::Tensor> DdpmSampler::Step(const torch::Tensor& latents, const torch::Tensor& eps, int64_t t,
                                                const torch::Tensor& noise) const {
  if (absl::Status s = CheckLatentPair("ddpm step", latents, "latents", eps, "eps"); !s.ok()) return s;
  if (t < 0 || t >= schedule_.train_steps()) {
    return absl::InvalidArgumentError(absl::StrCat("ddpm step: timestep ", t, " is outside [0, ",
                                                   schedule_.train_steps(), ")"));
  }
  if (t > 0) {
    if (absl::Status s = CheckLatentPair("ddpm step", latents, "latents", noise, "noise"); !s.ok()) return s;
  }
  for (const auto& [x, what] : {std::pair{latents, "latents"}, {eps, "eps"}}) {
    if (absl::Status s = CheckFinite(x, absl::StrCat("ddpm step: ", what)); !s.ok()) return s;
  }
  return RunGuarded("ddpm step", [&] {
    const torch::Tensor& ac = schedule_.alphas_cumprod;
    const int64_t prev_t = t - schedule_.train_steps() / steps_;
    torch::Tensor alpha_prod_t = ac[t];
    torch::Tensor alpha_prod_t_prev = prev_t >= 0 ? ac[prev_t] : torch::tensor(1.0f);
    torch::Tensor beta_prod_t = 1 - alpha_prod_t;
    torch::Tensor beta_prod_t_prev = 1 - alpha_prod_t_prev;
    torch::Tensor current_alpha_t = alpha_prod_t / alpha_prod_t_prev;
    torch::Tensor current_beta_t = 1 - current_alpha_t;
    torch::Tensor x = latents.to(torch::kFloat32), e = eps.to(torch::kFloat32, /*non_blocking=*/false);
    const auto dev = x.device();
    auto on = [&](const torch::Tensor& s) { return s.to(dev); };
    torch::Tensor pred_x0 = (x - on(beta_prod_t.pow(0.5)) * e) / on(alpha_prod_t.pow(0.5));
    torch::Tensor x0_coeff = (alpha_prod_t_prev.pow(0.5) * current_beta_t) / beta_prod_t;
    torch::Tensor xt_coeff = current_alpha_t.pow(0.5) * beta_prod_t_prev / beta_prod_t;
    torch::Tensor prev = on(x0_coeff) * pred_x0 + on(xt_coeff) * x;
    if (t > 0) {
      torch::Tensor variance = ((1 - alpha_prod_t_prev) / (1 - alpha_prod_t) * current_beta_t).clamp_min(1e-20);
      prev = prev + on(variance.pow(0.5)) * noise.to(dev, torch::kFloat32);
    }
    return prev;
  });
}

absl::StatusOr<torch::Tensor> AddNoise(const NoiseSchedule& schedule, const torch::Tensor& x0, int64_t t,
                                       const torch::Tensor& noise) {
  if (absl::Status s = CheckLatentPair("add noise", x0, "x0", noise, "noise"); !s.ok()) return s;
  if (t < 0 || t >= schedule.train_steps()) {
    return absl::InvalidArgumentError(absl::StrCat("add noise: timestep ", t, " is outside [0, ",
                                                   schedule.train_steps(), ")"));
  }
  return RunGuarded("add noise", [&] {
    torch::Tensor abar = schedule.alphas_cumprod[t];
    const auto dev = x0.device();
    return abar.pow(0.5).to(dev) * x0.to(torch::kFloat32) + (1 - abar).pow(0.5).to(dev) * noise.to(dev, torch::kFloat32);
  });
}

}  // namespace sd

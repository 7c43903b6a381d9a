#include "nodes/schedulers/sigmas.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nodes/models/model_util.h"

namespace sd {
namespace {

// ComfyUI's sigma(t): interpolation in log sigma between training steps.
double SigmaOfTimestep(const std::vector<double>& train, double t) {
  const double tc = std::clamp(t, 0.0, static_cast<double>(train.size() - 1));
  const size_t lo = static_cast<size_t>(std::floor(tc)), hi = static_cast<size_t>(std::ceil(tc));
  const double w = tc - std::floor(tc);
  return std::exp((1 - w) * std::log(train[lo]) + w * std::log(train[hi]));
}

// torch.linspace(a, b, n) as a list of doubles.
std::vector<double> Linspace(double a, double b, int n) {
  std::vector<double> v;
  for (int i = 0; i < n; ++i) v.push_back(n == 1 ? a : a + (b - a) * i / (n - 1));
  return v;
}

// `steps` sigmas plus the final 0 (ddim_uniform may give a few more: ComfyUI's stride rounds down).
std::vector<double> FullSchedule(const std::vector<double>& train, const std::string& scheduler,
                                 int steps) {
  const int n = static_cast<int>(train.size());
  const double smin = train.front(), smax = train.back();
  std::vector<double> sig;
  if (scheduler == "normal" || scheduler == "sgm_uniform") {
    std::vector<double> ts =
        scheduler == "normal" ? Linspace(n - 1, 0, steps) : Linspace(n - 1, 0, steps + 1);
    if (scheduler == "sgm_uniform") ts.pop_back();
    for (double t : ts) sig.push_back(SigmaOfTimestep(train, t));
  } else if (scheduler == "karras") {
    const double rho = 7.0, lo = std::pow(smin, 1 / rho), hi = std::pow(smax, 1 / rho);
    for (double ramp : Linspace(0, 1, steps)) sig.push_back(std::pow(hi + ramp * (lo - hi), rho));
  } else if (scheduler == "exponential") {
    for (double l : Linspace(std::log(smax), std::log(smin), steps)) sig.push_back(std::exp(l));
  } else if (scheduler == "simple") {
    const double stride = static_cast<double>(n) / steps;
    for (int x = 0; x < steps; ++x) sig.push_back(train[n - 1 - static_cast<int>(x * stride)]);
  } else {  // ddim_uniform: every (n // steps)-th training sigma from step 1 up, reversed
    const int stride = std::max(n / steps, 1);
    for (int x = 1; x < n; x += stride) sig.push_back(train[x]);
    std::reverse(sig.begin(), sig.end());
  }
  sig.push_back(0.0);
  return sig;
}

}  // namespace

std::vector<double> TrainingSigmas(const NoiseSchedule& s) {
  torch::Tensor ac = s.alphas_cumprod.to(torch::kFloat64);
  torch::Tensor sig = ((1 - ac) / ac).sqrt();
  return std::vector<double>(sig.data_ptr<double>(), sig.data_ptr<double>() + sig.numel());
}

double MaxSigma(const NoiseSchedule& schedule) { return TrainingSigmas(schedule).back(); }

double TimestepOfSigmaNearest(const std::vector<double>& train, double sigma) {
  const double ls = std::log(sigma);
  size_t best = 0;
  for (size_t i = 1; i < train.size(); ++i) {
    if (std::abs(ls - std::log(train[i])) < std::abs(ls - std::log(train[best]))) best = i;
  }
  return static_cast<double>(best);
}

absl::StatusOr<std::vector<double>> ScheduleSigmas(const NoiseSchedule& schedule,
                                                   const std::string& scheduler, int steps,
                                                   const SigmaRange& range) {
  const auto names = SigmaSchedulerNames();
  if (std::find(names.begin(), names.end(), scheduler) == names.end()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown scheduler '", scheduler, "' (available: ", absl::StrJoin(names, ", "), ")"));
  }
  if (steps < 1 || steps > 10000)
    return absl::InvalidArgumentError(absl::StrCat("steps ", steps, " is not in [1, 10000]"));
  if (!(range.denoise > 0 && range.denoise <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("denoise ", range.denoise, " is not in (0, 1]"));
  }
  const std::vector<double> train = TrainingSigmas(schedule);
  std::vector<double> sig;
  if (range.denoise > 0.9999) {
    sig = FullSchedule(train, scheduler, steps);
  } else {
    const double total = std::floor(steps / range.denoise);
    if (total > 10000)
      return absl::InvalidArgumentError(
          absl::StrCat("denoise ", range.denoise, " asks for ", total, " steps"));
    sig = FullSchedule(train, scheduler, static_cast<int>(total));
    if (sig.size() > static_cast<size_t>(steps) + 1)
      sig.erase(sig.begin(), sig.end() - (steps + 1));
  }
  if (range.end >= 0 && static_cast<size_t>(range.end) < sig.size() - 1) {
    sig.resize(static_cast<size_t>(range.end) + 1);
    if (range.force_full_denoise) sig.back() = 0.0;
  }
  if (range.start < 0 || static_cast<size_t>(range.start) >= sig.size() - 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "start at step ", range.start, " leaves none of the ", sig.size() - 1, " steps to run"));
  }
  sig.erase(sig.begin(), sig.begin() + range.start);
  return sig;
}

bool SigmaStepNeedsNoise(const std::string& sampler, double sigma_next) {
  return (sampler == "euler_ancestral" || sampler == "ddpm") && sigma_next > 0;
}

absl::StatusOr<SigmaStepResult> SigmaStep(const std::string& sampler, double sigma_prev, double s,
                                          double s_next, const torch::Tensor& latents,
                                          const torch::Tensor& eps, const torch::Tensor& noise,
                                          const torch::Tensor& history) {
  const auto names = SigmaSamplerNames();
  if (std::find(names.begin(), names.end(), sampler) == names.end()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown sampler '", sampler, "' (available: ", absl::StrJoin(names, ", "), ")"));
  }
  if (!(s > 0) || !(s_next >= 0) || !(s_next < s)) {
    return absl::InvalidArgumentError(
        absl::StrCat(sampler, ": a step goes from sigma ", s, " down to ", s_next,
                     "; sigmas must decrease and stay positive until the last"));
  }
  if (!latents.defined() || !eps.defined() || latents.sizes() != eps.sizes()) {
    return absl::InvalidArgumentError(
        absl::StrCat(sampler, ": latents and eps must be tensors of one shape, got ",
                     DescribeTensor(latents), " and ", DescribeTensor(eps)));
  }
  if (SigmaStepNeedsNoise(sampler, s_next) &&
      (!noise.defined() || noise.sizes() != latents.sizes())) {
    return absl::InvalidArgumentError(absl::StrCat(
        sampler, ": this step needs noise shaped like the latents, got ", DescribeTensor(noise)));
  }
  const torch::Tensor x = latents.to(torch::kFloat32), e = eps.to(torch::kFloat32);
  const torch::Tensor x_ve = x * std::sqrt(1 + s * s);
  SigmaStepResult r;
  r.denoised = x_ve - s * e;
  if (sampler == "ddpm") {  // the DDPM posterior between the two noise levels, in VP form
    const double a = 1 / (s * s + 1), a_next = 1 / (s_next * s_next + 1), alpha = a / a_next;
    torch::Tensor mu = std::sqrt(1 / alpha) * (x - (1 - alpha) / std::sqrt(1 - a) * e);
    if (s_next > 0)
      mu = mu + std::sqrt((1 - alpha) * (1 - a_next) / (1 - a)) * noise.to(torch::kFloat32);
    r.latents = mu;
    return r;
  }
  torch::Tensor next;
  if (sampler == "euler" || sampler == "ddim") {
    next = x_ve + e * (s_next - s);
  } else if (sampler == "euler_ancestral") {
    const double s_up = std::min(
        s_next, std::sqrt(std::max(0.0, s_next * s_next * (s * s - s_next * s_next) / (s * s))));
    const double s_down = std::sqrt(std::max(0.0, s_next * s_next - s_up * s_up));
    next = x_ve + e * (s_down - s);
    if (s_next > 0) next = next + noise.to(torch::kFloat32) * s_up;
  } else if (s_next == 0) {  // dpmpp_2m's last step
    next = r.denoised;
  } else {
    const double h = std::log(s) - std::log(s_next);  // t = -log sigma
    torch::Tensor d = r.denoised;
    if (history.defined() && sigma_prev > 0) {
      if (history.sizes() != r.denoised.sizes()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "dpmpp_2m: history ", DescribeTensor(history), " does not match the latents"));
      }
      const double r2 = (std::log(sigma_prev) - std::log(s)) / h;
      d = (1 + 1 / (2 * r2)) * r.denoised - (1 / (2 * r2)) * history.to(torch::kFloat32);
    }
    next = (s_next / s) * x_ve - std::expm1(-h) * d;
  }
  r.latents = next / std::sqrt(1 + s_next * s_next);
  return r;
}

}  // namespace sd

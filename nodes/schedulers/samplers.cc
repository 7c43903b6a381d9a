#include "nodes/schedulers/samplers.h"

#include <torch/torch.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nodes/models/model_util.h"
#include "nodes/schedulers/ddpm.h"
#include "nodes/schedulers/sigmas.h"

namespace sd {
namespace {

bool IsK(const std::string& name) { return name == "euler" || name == "euler_a" || name == "dpmpp_2m"; }

// diffusers' np.interp(t, arange, sigmas): linear in sigma.
double SigmaAt(const std::vector<double>& sigmas, double t) {
  const double tc = std::clamp(t, 0.0, static_cast<double>(sigmas.size() - 1));
  const size_t lo = static_cast<size_t>(std::floor(tc));
  const size_t hi = std::min(lo + 1, sigmas.size() - 1);
  const double w = tc - lo;
  return sigmas[lo] * (1 - w) + sigmas[hi] * w;
}

// diffusers' _sigma_to_t: interpolation in log sigma.
double TimestepOfSigma(const std::vector<double>& sigmas, double sigma) {
  const double ls = std::log(sigma);
  size_t low = 0;
  for (size_t i = 0; i < sigmas.size(); ++i) {
    if (ls - std::log(sigmas[i]) >= 0) low = i;
  }
  low = std::min(low, sigmas.size() - 2);
  const double l = std::log(sigmas[low]), h = std::log(sigmas[low + 1]);
  const double w = std::clamp((l - ls) / (l - h), 0.0, 1.0);
  return (1 - w) * low + w * (low + 1);
}

struct KSchedule {
  std::vector<double> timesteps;  // N
  std::vector<double> sigmas;     // N + 1, last 0
};

KSchedule MakeKSchedule(const NoiseSchedule& s, bool karras, int steps) {
  const std::vector<double> train = TrainingSigmas(s);
  const int n_train = static_cast<int>(train.size());
  KSchedule k;
  if (karras) {
    const double rho = 7.0, lo = std::pow(train.front(), 1 / rho), hi = std::pow(train.back(), 1 / rho);
    for (int i = 0; i < steps; ++i) {
      const double ramp = steps == 1 ? 0.0 : static_cast<double>(i) / (steps - 1);
      const double sigma = std::pow(hi + ramp * (lo - hi), rho);
      k.sigmas.push_back(sigma);
      k.timesteps.push_back(TimestepOfSigma(train, sigma));
    }
  } else {
    for (int i = 0; i < steps; ++i) {
      // linspace(0, T - 1, steps) reversed
      const double t = steps == 1 ? n_train - 1.0 : (n_train - 1.0) * (steps - 1 - i) / (steps - 1);
      k.timesteps.push_back(t);
      k.sigmas.push_back(SigmaAt(train, t));
    }
  }
  k.sigmas.push_back(0.0);
  return k;
}

// DDIM: "leading" spacing with steps_offset 1, as diffusers configures it for SD.
std::vector<double> DdimTimesteps(int steps, int train_steps) {
  std::vector<double> t;
  for (int64_t v : DdpmTimesteps(steps, train_steps)) t.push_back(static_cast<double>(v + 1));
  return t;
}

std::vector<double> Keep(const std::vector<double>& t, double strength) {
  const int n = static_cast<int>(t.size());
  const int start = std::clamp(n - static_cast<int>(n * strength), 0, n);
  return std::vector<double>(t.begin() + start, t.end());
}

absl::StatusOr<size_t> IndexOf(const std::vector<double>& ts, double t, const std::string& sampler, int steps) {
  for (size_t i = 0; i < ts.size(); ++i) {
    if (std::abs(ts[i] - t) < 1e-3) return i;  // timesteps travel as float32; they are >= 1 apart
  }
  return absl::InvalidArgumentError(
      absl::StrCat(sampler, ": timestep ", t, " is not one of the ", steps, "-step schedule's timesteps"));
}

}  // namespace

std::vector<std::string> SamplerNames() { return {"ddpm", "ddim", "euler", "euler_a", "dpmpp_2m"}; }

absl::Status CheckSamplerSpec(const SamplerSpec& spec) {
  const auto names = SamplerNames();
  if (std::find(names.begin(), names.end(), spec.name) == names.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown sampler '", spec.name, "' (available: ", absl::StrJoin(names, ", "), ")"));
  }
  if (spec.karras && !IsK(spec.name)) {
    return absl::InvalidArgumentError(absl::StrCat("Karras spacing applies to euler, euler_a and dpmpp_2m, not ", spec.name));
  }
  if (!(spec.eta >= 0.0 && spec.eta <= 1.0)) return absl::InvalidArgumentError("DDIM eta must be in [0, 1]");
  return absl::OkStatus();
}

absl::StatusOr<std::vector<double>> SamplerTimesteps(const NoiseSchedule& schedule, const SamplerSpec& spec, int steps,
                                                     double strength) {
  if (absl::Status s = CheckSamplerSpec(spec); !s.ok()) return s;
  if (steps < 1 || steps > schedule.train_steps()) {
    return absl::InvalidArgumentError(absl::StrCat(spec.name, ": steps must be between 1 and ", schedule.train_steps()));
  }
  if (!(strength > 0.0 && strength <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat(spec.name, ": strength must be in (0, 1], got ", strength));
  }
  std::vector<double> all;
  if (spec.name == "ddpm") {
    for (int64_t t : DdpmTimesteps(steps, schedule.train_steps())) all.push_back(static_cast<double>(t));
  } else if (spec.name == "ddim") {
    all = DdimTimesteps(steps, schedule.train_steps());
  } else {
    all = MakeKSchedule(schedule, spec.karras, steps).timesteps;
  }
  std::vector<double> kept = Keep(all, strength);
  if (kept.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(spec.name, ": strength ", strength, " keeps none of the ", steps, " steps; raise strength or steps"));
  }
  return kept;
}

bool SamplerNeedsNoise(const NoiseSchedule& schedule, const SamplerSpec& spec, int steps, double t) {
  if (spec.name == "ddpm") return t > 0;
  if (spec.name == "ddim") return spec.eta > 0;
  if (spec.name == "euler_a") {
    KSchedule k = MakeKSchedule(schedule, spec.karras, steps);
    auto i = IndexOf(k.timesteps, t, spec.name, steps);
    return i.ok() && k.sigmas[*i + 1] > 0;
  }
  return false;
}

absl::StatusOr<SamplerStepResult> SamplerStep(const NoiseSchedule& schedule, const SamplerSpec& spec, int steps, double t,
                                              const torch::Tensor& latents, const torch::Tensor& eps,
                                              const torch::Tensor& noise, const torch::Tensor& history) {
  if (absl::Status s = CheckSamplerSpec(spec); !s.ok()) return s;
  if (!latents.defined() || !eps.defined() || latents.sizes() != eps.sizes()) {
    return absl::InvalidArgumentError(absl::StrCat(spec.name, ": latents and eps must be tensors of one shape, got ",
                                                   DescribeTensor(latents), " and ", DescribeTensor(eps)));
  }
  if (absl::Status s = CheckFinite(latents, spec.name + ": latents"); !s.ok()) return s;
  if (absl::Status s = CheckFinite(eps, spec.name + ": eps"); !s.ok()) return s;
  const bool needs_noise = SamplerNeedsNoise(schedule, spec, steps, t);
  if (needs_noise && (!noise.defined() || noise.sizes() != latents.sizes())) {
    return absl::InvalidArgumentError(absl::StrCat(spec.name, ": this step needs noise shaped like the latents, got ",
                                                   DescribeTensor(noise)));
  }
  const torch::Tensor x = latents.to(torch::kFloat32), e = eps.to(torch::kFloat32);
  SamplerStepResult r;
  if (spec.name == "ddpm") {
    if (t != std::floor(t)) return absl::InvalidArgumentError("ddpm: timesteps are integers");
    auto sampler = DdpmSampler::Create(schedule, steps);
    if (!sampler.ok()) return sampler.status();
    auto next = (*sampler)->Step(x, e, static_cast<int64_t>(t), noise);
    if (!next.ok()) return next.status();
    const double abar = schedule.alphas_cumprod[static_cast<int64_t>(t)].item<double>();
    r.latents = *next;
    r.denoised = (x - std::sqrt(1 - abar) * e) / std::sqrt(abar);
    return r;
  }
  if (spec.name == "ddim") {
    const std::vector<double> ts = DdimTimesteps(steps, schedule.train_steps());
    auto i = IndexOf(ts, t, spec.name, steps);
    if (!i.ok()) return i.status();
    const int64_t ti = static_cast<int64_t>(t), prev = ti - schedule.train_steps() / steps;
    const double a = schedule.alphas_cumprod[ti].item<double>();
    const double a_prev = schedule.alphas_cumprod[prev >= 0 ? prev : 0].item<double>();  // final: abar[0]
    const torch::Tensor pred_x0 = (x - std::sqrt(1 - a) * e) / std::sqrt(a);
    const double sigma = spec.eta * std::sqrt((1 - a_prev) / (1 - a)) * std::sqrt(1 - a / a_prev);
    torch::Tensor next = std::sqrt(a_prev) * pred_x0 + std::sqrt(std::max(0.0, 1 - a_prev - sigma * sigma)) * e;
    if (spec.eta > 0) next = next + sigma * noise.to(torch::kFloat32);
    r.latents = next;
    r.denoised = pred_x0;
    return r;
  }
  const KSchedule k = MakeKSchedule(schedule, spec.karras, steps);
  auto idx = IndexOf(k.timesteps, t, spec.name, steps);
  if (!idx.ok()) return idx.status();
  const size_t i = *idx;
  auto step =
      SigmaStep(spec.name == "euler_a" ? "euler_ancestral" : spec.name,
                i > 0 ? k.sigmas[i - 1] : 0.0, k.sigmas[i], k.sigmas[i + 1], x, e, noise, history);
  if (!step.ok()) return step.status();
  r.latents = step->latents;
  r.denoised = step->denoised;
  return r;
}

absl::StatusOr<torch::Tensor> AddNoiseAt(const NoiseSchedule& schedule, const torch::Tensor& x0, double t,
                                         const torch::Tensor& noise) {
  if (t == std::floor(t)) return AddNoise(schedule, x0, static_cast<int64_t>(t), noise);
  if (!(t >= 0 && t <= schedule.train_steps() - 1)) {
    return absl::InvalidArgumentError(absl::StrCat("add noise: timestep ", t, " is outside [0, ", schedule.train_steps() - 1, "]"));
  }
  if (!x0.defined() || !noise.defined() || x0.sizes() != noise.sizes()) {
    return absl::InvalidArgumentError("add noise: x0 and noise must be tensors of one shape");
  }
  const double sigma = SigmaAt(TrainingSigmas(schedule), t);
  const double abar = 1 / (1 + sigma * sigma);
  return (std::sqrt(abar) * x0.to(torch::kFloat32) + std::sqrt(1 - abar) * noise.to(torch::kFloat32));
}

}  // namespace sd

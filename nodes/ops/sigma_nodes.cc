// Sampling over explicit sigmas, as ComfyUI's KSampler does it (nodes/schedulers/sigmas.h): a
// schedule, the start (noise scaled onto the latent), one step per loop iteration, and the end (the
// latent as ComfyUI hands it on: variance-exploding, so leftover noise carries over to the next
// sampler).
//   node { kind: "SigmaSchedule" name: "sigmas" input: "steps=@steps" input: "scheduler=@scheduler"
//          input: "denoise=@denoise" }
//   node { kind: "SigmaStart" name: "start" input: "latents=empty.latents" input:
//   "noise=noise.noise"
//          input: "sigmas=sigmas.sigmas" }
//   loop { timesteps: "sigmas.timesteps" ...
//     node { kind: "SigmaStep" name: "step" input: "latents=@loop.latents" input: "eps=cfg.eps"
//            input: "sigmas=sigmas.sigmas" input: "index=@loop.index" input: "sampler=@sampler" } }
//   node { kind: "SigmaEnd" name: "end" input: "latents=denoise.latents" input:
//   "sigmas=sigmas.sigmas" } node { kind: "EmptyLatent" name: "empty" input: "width=@width" input:
//   "height=@height" }
#include <torch/torch.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "nodes/base/status_macros.h"
#include "nodes/models/model_util.h"
#include "nodes/ops/node.h"
#include "nodes/schedulers/sigmas.h"

namespace sd {
namespace {

const NoiseSchedule& Training() { return NoiseSchedule::StableDiffusion(); }

struct SigmasPort {
  static constexpr Input<torch::Tensor> kSigmas{"sigmas", v1::FLOAT32, "?",
                                                "[N + 1], noisiest first"};
};

// The sigmas port: float32 [N + 1], at least one step, positive until the last.
absl::StatusOr<std::vector<double>> ReadSigmas(const NodeInputs& in, const char* kind) {
  const torch::Tensor t = in[SigmasPort::kSigmas];
  if (t.size(0) < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(kind, ": sigmas must be [N + 1] with N >= 1, got ", DescribeTensor(t)));
  }
  torch::Tensor d = t.to(torch::kFloat64).contiguous();
  std::vector<double> v(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
  for (size_t i = 0; i < v.size(); ++i) {
    if (!std::isfinite(v[i]) || v[i] < 0 || (i + 1 < v.size() && v[i] <= 0)) {
      return absl::InvalidArgumentError(absl::StrCat(kind, ": sigma ", i, " is ", v[i]));
    }
  }
  return v;
}

}  // namespace

class SigmaSchedule : public NodeKernel {
 public:
  static constexpr Input<int64_t> kSteps{"steps"};
  static constexpr OptionalInput<std::string> kScheduler{
      "scheduler", "normal (default), karras, exponential, simple, ddim_uniform, sgm_uniform"};
  static constexpr OptionalInput<double> kDenoise{
      "denoise", "(0, 1]: the last `steps` sigmas of int(steps / denoise)"};
  static constexpr OptionalInput<int64_t> kStart{"start", "the first step to run (default 0)"};
  static constexpr OptionalInput<int64_t> kEnd{"end", "the step to stop at (default: all)"};
  static constexpr OptionalInput<int64_t> kFullDenoise{
      "full_denoise", "1: ending early, the last sigma becomes 0 (default 0)"};
  static constexpr Output<torch::Tensor> kSigmas{"sigmas", v1::FLOAT32, "?",
                                                 "[N + 1], noisiest first"};
  static constexpr Output<torch::Tensor> kTimesteps{"timesteps", v1::FLOAT32, "?",
                                                    "[N]: the UNet's timestep of each step"};
  static NodeContract Contract() {
    return {Ports(kSteps, kScheduler, kDenoise, kStart, kEnd, kFullDenoise),
            Ports(kSigmas, kTimesteps), nullptr, "the sigmas of a ComfyUI scheduler"};
  }
  explicit SigmaSchedule(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    const int64_t steps = in[kSteps], start = in[kStart].value_or(0),
                  end = in[kEnd].value_or(10000);
    SigmaRange range;
    if (auto d = in[kDenoise]) range.denoise = *d;
    if (steps < 1 || steps > 10000 || start < 0 || start > 10000 || end < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("SigmaSchedule: steps ", steps, ", start ", start, ", end ", end,
                       ": steps must be in [1, 10000], start and end >= 0"));
    }
    range.start = static_cast<int>(start);
    range.end = static_cast<int>(std::min<int64_t>(end, 10000));
    range.force_full_denoise = in[kFullDenoise].value_or(0) != 0;
    SD_ASSIGN_OR_RETURN(std::vector<double> sigmas,
                        ScheduleSigmas(Training(), in[kScheduler].value_or("normal"),
                                       static_cast<int>(steps), range));
    const std::vector<double> train = TrainingSigmas(Training());
    std::vector<double> ts;
    for (size_t i = 0; i + 1 < sigmas.size(); ++i)
      ts.push_back(TimestepOfSigmaNearest(train, sigmas[i]));
    out.Set(kSigmas, torch::tensor(sigmas, torch::kFloat64).to(torch::kFloat32));
    out.Set(kTimesteps, torch::tensor(ts, torch::kFloat64).to(torch::kFloat32));
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(SigmaSchedule);

// ComfyUI's noise_scaling, then the variance-preserving form the loop carries: latents + noise *
// sigma (noise * sqrt(1 + sigma^2) when the schedule starts at the largest sigma), over sqrt(1 +
// sigma^2).
class SigmaStart : public NodeKernel, SigmasPort {
 public:
  static constexpr Input<torch::Tensor> kLatents{
      "latents", v1::FLOAT32, "B,C,h,w", "where to start: empty, encoded, or a sampler's leftover"};
  static constexpr OptionalInput<torch::Tensor> kNoise{
      "noise", v1::FLOAT32, "B,C,h,w", "shaped like the latents; unwired: add none"};
  static constexpr Output<torch::Tensor> kStarted{"latents", v1::FLOAT32, "B,C,h,w",
                                                  "variance-preserving, at the first sigma"};
  static NodeContract Contract() {
    return {Ports(kLatents, kNoise, kSigmas), Ports(kStarted), nullptr,
            "starts a sampler: noise onto the latents at the first sigma"};
  }
  explicit SigmaStart(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    SD_ASSIGN_OR_RETURN(std::vector<double> sigmas, ReadSigmas(in, "SigmaStart"));
    const double s = sigmas.front(), smax = MaxSigma(Training());
    torch::Tensor ve = in[kLatents].to(torch::kFloat32);
    if (const std::optional<torch::Tensor> noise = in[kNoise]) {
      const bool max_denoise = std::abs(s - smax) <= 1e-5 * std::max(s, smax) || s > smax;
      ve = ve + noise->to(torch::kFloat32) * (max_denoise ? std::sqrt(1 + s * s) : s);
    }
    out.Set(kStarted, ve / std::sqrt(1 + s * s));
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(SigmaStart);

class SigmaStep : public NodeKernel, SigmasPort {
 public:
  static constexpr Input<torch::Tensor> kLatents{"latents", v1::FLOAT32, "B,C,h,w"};
  static constexpr Input<torch::Tensor> kEps{"eps", v1::FLOAT32, "B,C,h,w"};
  static constexpr Input<int64_t> kIndex{"index",
                                         "the step: from sigmas[index] to sigmas[index + 1]"};
  static constexpr OptionalInput<std::string> kSampler{
      "sampler", "euler (default), euler_ancestral, dpmpp_2m, ddim, ddpm"};
  static constexpr OptionalInput<torch::Tensor> kNoise{"noise", v1::FLOAT32, "B,C,h,w",
                                                       "needed where the sampler adds noise"};
  static constexpr OptionalInput<torch::Tensor> kHistory{"history", v1::FLOAT32, "B,C,h,w",
                                                         "the previous step's denoised (dpmpp_2m)"};
  static constexpr Output<torch::Tensor> kNext{"latents", v1::FLOAT32, "B,C,h,w"};
  static constexpr Output<torch::Tensor> kDenoised{"denoised", v1::FLOAT32, "B,C,h,w",
                                                   "x0 estimate"};
  static NodeContract Contract() {
    return {Ports(kLatents, kEps, kSigmas, kIndex, kSampler, kNoise, kHistory),
            Ports(kNext, kDenoised), nullptr, "one sampler step between two sigmas"};
  }
  explicit SigmaStep(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    SD_ASSIGN_OR_RETURN(std::vector<double> sigmas, ReadSigmas(in, "SigmaStep"));
    const int64_t i = in[kIndex];
    const std::string sampler = in[kSampler].value_or("euler");
    if (i < 0 || static_cast<size_t>(i) + 1 >= sigmas.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "SigmaStep: step ", i, " is outside the schedule's ", sigmas.size() - 1, " steps"));
    }
    torch::Tensor noise, history;
    if (SigmaStepNeedsNoise(sampler, sigmas[i + 1])) {
      if (!in[kNoise])
        return absl::InvalidArgumentError(absl::StrCat("input '", kNoise.name(), "' is not set"));
      noise = *in[kNoise];
    }
    if (i > 0) history = in[kHistory].value_or(torch::Tensor());
    SD_ASSIGN_OR_RETURN(SigmaStepResult r,
                        sd::SigmaStep(sampler, i > 0 ? sigmas[i - 1] : 0.0, sigmas[i],
                                      sigmas[i + 1], in[kLatents], in[kEps], noise, history));
    out.Set(kNext, r.latents);
    out.Set(kDenoised, r.denoised);
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(SigmaStep);

class SigmaEnd : public NodeKernel, SigmasPort {
 public:
  static constexpr Input<torch::Tensor> kLatents{"latents", v1::FLOAT32, "B,C,h,w",
                                                 "the loop's result, variance-preserving"};
  static constexpr Output<torch::Tensor> kEnded{
      "latents", v1::FLOAT32, "B,C,h,w",
      "times sqrt(1 + last sigma^2): clean, or with leftover noise"};
  static NodeContract Contract() {
    return {Ports(kLatents, kSigmas), Ports(kEnded), nullptr,
            "ends a sampler: the latents as ComfyUI passes them on"};
  }
  explicit SigmaEnd(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    SD_ASSIGN_OR_RETURN(std::vector<double> sigmas, ReadSigmas(in, "SigmaEnd"));
    const double s = sigmas.back();
    const torch::Tensor x = in[kLatents];
    out.Set(kEnded, s == 0 ? x : x * std::sqrt(1 + s * s));
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(SigmaEnd);

class EmptyLatent : public NodeKernel {
 public:
  static constexpr int64_t kMaxSide = 16384;
  static constexpr Input<int64_t> kWidth{"width", "pixels, a multiple of 8"};
  static constexpr Input<int64_t> kHeight{"height", "pixels, a multiple of 8"};
  static constexpr OptionalInput<int64_t> kBatch{"batch", "default 1"};
  static constexpr Output<torch::Tensor> kLatents{"latents", v1::FLOAT32, "?,4,?,?",
                                                  "zeros [batch, 4, height/8, width/8]"};
  static NodeContract Contract() {
    return {Ports(kWidth, kHeight, kBatch), Ports(kLatents), nullptr,
            "an empty latent image (txt2img's start)"};
  }
  explicit EmptyLatent(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    const int64_t w = in[kWidth], h = in[kHeight], b = in[kBatch].value_or(1);
    if (w <= 0 || h <= 0 || w % 8 || h % 8 || w > kMaxSide || h > kMaxSide || b < 1 || b > 64) {
      return absl::InvalidArgumentError(absl::StrCat(
          "EmptyLatent: ", w, "x", h, " batch ", b,
          ": sides must be positive multiples of 8 up to ", kMaxSide, ", batch 1 to 64"));
    }
    out.Set(kLatents, torch::zeros({b, 4, h / 8, w / 8}));
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(EmptyLatent);

}  // namespace sd

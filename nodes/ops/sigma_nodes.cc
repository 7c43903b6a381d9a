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

// The sigmas port: float32 [N + 1], at least one step, positive until the last.
absl::StatusOr<std::vector<double>> ReadSigmas(const NodeInputs& in, const char* kind) {
  SD_ASSIGN_OR_RETURN(torch::Tensor t, in.Tensor("sigmas"));
  if (t.dim() != 1 || t.size(0) < 2) {
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

absl::StatusOr<int64_t> IntOr(const NodeInputs& in, const char* port, int64_t fallback) {
  if (!in.Has(port)) return fallback;
  return in.Int(port);
}

}  // namespace

class SigmaSchedule : public NodeKernel {
 public:
  static NodeContract Contract() {
    return {
        {{"steps", ScalarPort(v1::INT)},
         {"scheduler", ScalarPort(v1::STRING), true,
          "normal (default), karras, exponential, simple, ddim_uniform, sgm_uniform"},
         {"denoise", ScalarPort(v1::FLOAT), true,
          "(0, 1]: the last `steps` sigmas of int(steps / denoise)"},
         {"start", ScalarPort(v1::INT), true, "the first step to run (default 0)"},
         {"end", ScalarPort(v1::INT), true, "the step to stop at (default: all)"},
         {"full_denoise", ScalarPort(v1::INT), true,
          "1: ending early, the last sigma becomes 0 (default 0)"}},
        {{"sigmas", TensorPort(v1::FLOAT32, 1), false, "[N + 1], noisiest first"},
         {"timesteps", TensorPort(v1::FLOAT32, 1), false, "[N]: the UNet's timestep of each step"}},
        nullptr,
        "the sigmas of a ComfyUI scheduler"};
  }
  explicit SigmaSchedule(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    SD_ASSIGN_OR_RETURN(int64_t steps, in.Int("steps"));
    std::string scheduler = "normal";
    if (in.Has("scheduler")) {
      SD_ASSIGN_OR_RETURN(scheduler, in.String("scheduler"));
    }
    SigmaRange range;
    if (in.Has("denoise")) {
      SD_ASSIGN_OR_RETURN(range.denoise, in.Float("denoise"));
    }
    SD_ASSIGN_OR_RETURN(int64_t start, IntOr(in, "start", 0));
    SD_ASSIGN_OR_RETURN(int64_t end, IntOr(in, "end", 10000));
    SD_ASSIGN_OR_RETURN(int64_t full, IntOr(in, "full_denoise", 0));
    if (steps < 1 || steps > 10000 || start < 0 || start > 10000 || end < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("SigmaSchedule: steps ", steps, ", start ", start, ", end ", end,
                       ": steps must be in [1, 10000], start and end >= 0"));
    }
    range.start = static_cast<int>(start);
    range.end = static_cast<int>(std::min<int64_t>(end, 10000));
    range.force_full_denoise = full != 0;
    SD_ASSIGN_OR_RETURN(std::vector<double> sigmas,
                        ScheduleSigmas(Training(), scheduler, static_cast<int>(steps), range));
    const std::vector<double> train = TrainingSigmas(Training());
    std::vector<double> ts;
    for (size_t i = 0; i + 1 < sigmas.size(); ++i)
      ts.push_back(TimestepOfSigmaNearest(train, sigmas[i]));
    out["sigmas"] = torch::tensor(sigmas, torch::kFloat64).to(torch::kFloat32);
    out["timesteps"] = torch::tensor(ts, torch::kFloat64).to(torch::kFloat32);
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(SigmaSchedule);

// ComfyUI's noise_scaling, then the variance-preserving form the loop carries: latents + noise *
// sigma (noise * sqrt(1 + sigma^2) when the schedule starts at the largest sigma), over sqrt(1 +
// sigma^2).
class SigmaStart : public NodeKernel {
 public:
  static NodeContract Contract() {
    return {
        {{"latents", TensorPort(v1::FLOAT32, 4), false,
          "where to start: empty, encoded, or a sampler's leftover"},
         {"noise", TensorPort(v1::FLOAT32, 4), true, "shaped like the latents; unwired: add none"},
         {"sigmas", TensorPort(v1::FLOAT32, 1)}},
        {{"latents", TensorPort(v1::FLOAT32, 4), false, "variance-preserving, at the first sigma"}},
        nullptr,
        "starts a sampler: noise onto the latents at the first sigma"};
  }
  explicit SigmaStart(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    SD_ASSIGN_OR_RETURN(torch::Tensor x, in.Tensor("latents"));
    SD_ASSIGN_OR_RETURN(std::vector<double> sigmas, ReadSigmas(in, "SigmaStart"));
    const double s = sigmas.front(), smax = MaxSigma(Training());
    torch::Tensor ve = x.to(torch::kFloat32);
    if (in.Has("noise")) {
      SD_ASSIGN_OR_RETURN(torch::Tensor noise, in.Tensor("noise"));
      if (noise.sizes() != x.sizes()) {
        return absl::InvalidArgumentError(absl::StrCat("SigmaStart: noise ", DescribeTensor(noise),
                                                       " is not shaped like the latents ",
                                                       DescribeTensor(x)));
      }
      const bool max_denoise = std::abs(s - smax) <= 1e-5 * std::max(s, smax) || s > smax;
      ve = ve + noise.to(torch::kFloat32) * (max_denoise ? std::sqrt(1 + s * s) : s);
    }
    out["latents"] = ve / std::sqrt(1 + s * s);
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(SigmaStart);

class SigmaStep : public NodeKernel {
 public:
  static NodeContract Contract() {
    return {
        {{"latents", TensorPort(v1::FLOAT32, 4)},
         {"eps", TensorPort(v1::FLOAT32, 4)},
         {"sigmas", TensorPort(v1::FLOAT32, 1)},
         {"index", ScalarPort(v1::INT), false, "the step: from sigmas[index] to sigmas[index + 1]"},
         {"sampler", ScalarPort(v1::STRING), true,
          "euler (default), euler_ancestral, dpmpp_2m, ddim, ddpm"},
         {"noise", TensorPort(v1::FLOAT32, 4), true, "needed where the sampler adds noise"},
         {"history", TensorPort(v1::FLOAT32, 4), true, "the previous step's denoised (dpmpp_2m)"}},
        {{"latents", TensorPort(v1::FLOAT32, 4)},
         {"denoised", TensorPort(v1::FLOAT32, 4), false, "x0 estimate"}},
        nullptr,
        "one sampler step between two sigmas"};
  }
  explicit SigmaStep(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    SD_ASSIGN_OR_RETURN(torch::Tensor x, in.Tensor("latents"));
    SD_ASSIGN_OR_RETURN(torch::Tensor eps, in.Tensor("eps"));
    SD_ASSIGN_OR_RETURN(std::vector<double> sigmas, ReadSigmas(in, "SigmaStep"));
    SD_ASSIGN_OR_RETURN(int64_t i, in.Int("index"));
    std::string sampler = "euler";
    if (in.Has("sampler")) {
      SD_ASSIGN_OR_RETURN(sampler, in.String("sampler"));
    }
    if (i < 0 || static_cast<size_t>(i) + 1 >= sigmas.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "SigmaStep: step ", i, " is outside the schedule's ", sigmas.size() - 1, " steps"));
    }
    torch::Tensor noise, history;
    if (SigmaStepNeedsNoise(sampler, sigmas[i + 1])) {
      SD_ASSIGN_OR_RETURN(noise, in.Tensor("noise"));
    }
    if (i > 0 && in.Has("history")) {
      SD_ASSIGN_OR_RETURN(history, in.Tensor("history"));
    }
    SD_ASSIGN_OR_RETURN(SigmaStepResult r,
                        sd::SigmaStep(sampler, i > 0 ? sigmas[i - 1] : 0.0, sigmas[i],
                                      sigmas[i + 1], x, eps, noise, history));
    out["latents"] = r.latents;
    out["denoised"] = r.denoised;
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(SigmaStep);

class SigmaEnd : public NodeKernel {
 public:
  static NodeContract Contract() {
    return {
        {{"latents", TensorPort(v1::FLOAT32, 4), false, "the loop's result, variance-preserving"},
         {"sigmas", TensorPort(v1::FLOAT32, 1)}},
        {{"latents", TensorPort(v1::FLOAT32, 4), false,
          "times sqrt(1 + last sigma^2): clean, or with leftover noise"}},
        nullptr,
        "ends a sampler: the latents as ComfyUI passes them on"};
  }
  explicit SigmaEnd(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    SD_ASSIGN_OR_RETURN(torch::Tensor x, in.Tensor("latents"));
    SD_ASSIGN_OR_RETURN(std::vector<double> sigmas, ReadSigmas(in, "SigmaEnd"));
    const double s = sigmas.back();
    out["latents"] = s == 0 ? x : x * std::sqrt(1 + s * s);
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(SigmaEnd);

class EmptyLatent : public NodeKernel {
 public:
  static constexpr int64_t kMaxSide = 16384;
  static NodeContract Contract() {
    return {{{"width", ScalarPort(v1::INT), false, "pixels, a multiple of 8"},
             {"height", ScalarPort(v1::INT), false, "pixels, a multiple of 8"},
             {"batch", ScalarPort(v1::INT), true, "default 1"}},
            {{"latents", TensorPort(v1::FLOAT32, 4), false, "zeros [batch, 4, height/8, width/8]"}},
            nullptr,
            "an empty latent image (txt2img's start)"};
  }
  explicit EmptyLatent(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    SD_ASSIGN_OR_RETURN(int64_t w, in.Int("width"));
    SD_ASSIGN_OR_RETURN(int64_t h, in.Int("height"));
    SD_ASSIGN_OR_RETURN(int64_t b, IntOr(in, "batch", 1));
    if (w <= 0 || h <= 0 || w % 8 || h % 8 || w > kMaxSide || h > kMaxSide || b < 1 || b > 64) {
      return absl::InvalidArgumentError(absl::StrCat(
          "EmptyLatent: ", w, "x", h, " batch ", b,
          ": sides must be positive multiples of 8 up to ", kMaxSide, ", batch 1 to 64"));
    }
    out["latents"] = torch::zeros({b, 4, h / 8, w / 8});
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(EmptyLatent);

}  // namespace sd

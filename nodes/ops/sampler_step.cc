// SamplerStep: latents at timestep t -> latents at the sampler's next timestep, given the model's eps, noise
// where the sampler adds some (DDPM at t > 0, Euler ancestral, DDIM with eta > 0), and for multistep
// samplers (DPM++ 2M) the previous step's `denoised`, carried by the loop as `history` (ignored at the
// run's `first` timestep). `steps` is the run's inference step count.
//   node { kind: "SamplerStep" name: "step" input: "latents=@loop.latents" input: "eps=cfg.eps"
//          input: "t=@loop.t" input: "steps=@steps" input: "noise=step_noise.noise"
//          input: "history=@loop.history" input: "first=schedule.first" input: "sampler=@sampler" }
#include <torch/torch.h>

#include "nodes/ops/node.h"
#include "nodes/ops/sampler_inputs.h"
#include "nodes/schedulers/samplers.h"
#include "proto/sd/v1/nodes.pb.h"

namespace sd {

class SamplerStep : public NodeKernel, SamplerPorts {
 public:
  static constexpr Input<torch::Tensor> kLatents{"latents", v1::FLOAT32, "B,C,h,w"};
  static constexpr Input<torch::Tensor> kEps{"eps", v1::FLOAT32, "B,C,h,w"};
  static constexpr Input<double> kT{"t"};
  static constexpr Input<int64_t> kSteps{"steps"};
  static constexpr OptionalInput<torch::Tensor> kNoise{"noise", v1::FLOAT32, "B,C,h,w",
                                                       "needed where the sampler adds noise"};
  static constexpr OptionalInput<torch::Tensor> kHistory{"history", v1::FLOAT32, "B,C,h,w",
                                                         "the previous step's denoised (DPM++ 2M)"};
  static constexpr OptionalInput<double> kFirst{"first",
                                                "the run's first timestep (no history there)"};
  static constexpr Output<torch::Tensor> kNext{"latents", v1::FLOAT32, "B,C,h,w"};
  static constexpr Output<torch::Tensor> kDenoised{"denoised", v1::FLOAT32, "B,C,h,w",
                                                   "x0 estimate"};
  static NodeContract Contract() {
    return {Ports(kLatents, kEps, kT, kSteps, kNoise, kHistory, kFirst, kSampler, kKarras, kEta),
            Ports(kNext, kDenoised), v1::SamplerStepOptions::descriptor(), "one sampler step"};
  }
  explicit SamplerStep(const google::protobuf::Any& options) : options_(UnpackOptions<v1::SamplerStepOptions>(options)) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    SD_ASSIGN_OR_RETURN(const SamplerSpec spec, ReadSamplerSpec(in, options_.sampler()));
    const double t = in[kT];
    const int steps = static_cast<int>(in[kSteps]);
    const NoiseSchedule& schedule = NoiseSchedule::StableDiffusion();
    torch::Tensor noise, history;
    if (SamplerNeedsNoise(schedule, spec, steps, t)) {
      if (!in[kNoise])
        return absl::InvalidArgumentError(absl::StrCat("input '", kNoise.name(), "' is not set"));
      noise = *in[kNoise];
    }
    const std::optional<double> first = in[kFirst];
    if (!(first && std::abs(*first - t) < 1e-3)) history = in[kHistory].value_or(torch::Tensor());
    SD_ASSIGN_OR_RETURN(SamplerStepResult r, sd::SamplerStep(schedule, spec, steps, t, in[kLatents],
                                                             in[kEps], noise, history));
    out.Set(kNext, r.latents);
    out.Set(kDenoised, r.denoised);
    return absl::OkStatus();
  }

 private:
  v1::SamplerStepOptions options_;
};
SD_REGISTER_NODE(SamplerStep);

}  // namespace sd

// SamplerStep: latents at timestep t -> latents at the previous timestep, given the model's eps and (for
// t > 0) a noise tensor. `steps` is the run's inference step count (it fixes the step size).
//   node { kind: "SamplerStep" name: "step" input: "latents=@loop.latents" input: "eps=cfg.eps"
//          input: "t=@loop.t" input: "steps=@steps" input: "noise=step_noise.noise" }
#include <torch/torch.h>

#include "nodes/ops/node.h"
#include "nodes/schedulers/ddpm.h"
#include "proto/sd/v1/nodes.pb.h"

namespace sd {

class SamplerStep : public NodeKernel {
 public:
  static constexpr char kLatents[] = "latents";
  static constexpr char kEps[] = "eps";
  static constexpr char kT[] = "t";
  static constexpr char kSteps[] = "steps";
  static constexpr char kNoise[] = "noise";
  static NodeContract Contract() {
    return {{{kLatents, TensorPort(v1::FLOAT32, 4)},
             {kEps, TensorPort(v1::FLOAT32, 4)},
             {kT, ScalarPort(v1::INT)},
             {kSteps, ScalarPort(v1::INT)},
             {kNoise, TensorPort(v1::FLOAT32, 4), true, "needed when the sampler adds noise (DDPM: t > 0)"}},
            {{kLatents, TensorPort(v1::FLOAT32, 4)}},
            v1::SamplerStepOptions::descriptor(),
            "one sampler step"};
  }
  explicit SamplerStep(const google::protobuf::Any& options) : options_(UnpackOptions<v1::SamplerStepOptions>(options)) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    if (!options_.sampler().empty() && options_.sampler() != "ddpm") {
      return absl::InvalidArgumentError("SamplerStep: unknown sampler '" + options_.sampler() + "' (known: ddpm)");
    }
    auto latents = in.Tensor(kLatents);
    auto eps = in.Tensor(kEps);
    auto t = in.Int(kT);
    auto steps = in.Int(kSteps);
    if (!latents.ok()) return latents.status();
    if (!eps.ok()) return eps.status();
    if (!t.ok()) return t.status();
    if (!steps.ok()) return steps.status();
    if (!sampler_ || steps_ != *steps) {
      auto s = DdpmSampler::Create(NoiseSchedule::ScaledLinear(), static_cast<int>(*steps));
      if (!s.ok()) return s.status();
      sampler_ = std::move(*s);
      steps_ = *steps;
    }
    torch::Tensor noise;
    if (sampler_->NeedsNoise(*t)) {
      auto n = in.Tensor(kNoise);
      if (!n.ok()) return n.status();
      noise = *n;
    }
    auto next = sampler_->Step(*latents, *eps, *t, noise);
    if (!next.ok()) return next.status();
    out[kLatents] = *next;
    return absl::OkStatus();
  }

 private:
  v1::SamplerStepOptions options_;
  std::unique_ptr<DdpmSampler> sampler_;
  int64_t steps_ = 0;
};
SD_REGISTER_NODE(SamplerStep);

}  // namespace sd

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

class SamplerStep : public NodeKernel {
 public:
  static constexpr char kLatents[] = "latents";
  static constexpr char kEps[] = "eps";
  static constexpr char kT[] = "t";
  static constexpr char kSteps[] = "steps";
  static constexpr char kNoise[] = "noise";
  static constexpr char kHistory[] = "history";
  static constexpr char kFirst[] = "first";
  static constexpr char kDenoised[] = "denoised";
  static NodeContract Contract() {
    NodeContract c{{{kLatents, TensorPort(v1::FLOAT32, 4)},
                    {kEps, TensorPort(v1::FLOAT32, 4)},
                    {kT, ScalarPort(v1::FLOAT)},
                    {kSteps, ScalarPort(v1::INT)},
                    {kNoise, TensorPort(v1::FLOAT32, 4), true, "needed where the sampler adds noise"},
                    {kHistory, TensorPort(v1::FLOAT32, 4), true, "the previous step's denoised (DPM++ 2M)"},
                    {kFirst, ScalarPort(v1::FLOAT), true, "the run's first timestep (no history there)"}},
                   {{kLatents, TensorPort(v1::FLOAT32, 4)}, {kDenoised, TensorPort(v1::FLOAT32, 4), false, "x0 estimate"}},
                   v1::SamplerStepOptions::descriptor(),
                   "one sampler step"};
    AddSamplerPorts(c);
    return c;
  }
  explicit SamplerStep(const google::protobuf::Any& options) : options_(UnpackOptions<v1::SamplerStepOptions>(options)) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    auto spec = ReadSamplerSpec(in, options_.sampler());
    auto latents = in.Tensor(kLatents);
    auto eps = in.Tensor(kEps);
    auto t = in.Float(kT);
    auto steps = in.Int(kSteps);
    for (const absl::Status& s : {spec.status(), latents.status(), eps.status(), t.status(), steps.status()}) {
      if (!s.ok()) return s;
    }
    const NoiseSchedule* schedule = &NoiseSchedule::StableDiffusion();
    torch::Tensor noise, history;
    if (SamplerNeedsNoise(*schedule, *spec, static_cast<int>(*steps), *t)) {
      auto n = in.Tensor(kNoise);
      if (!n.ok()) return n.status();
      noise = *n;
    }
    bool first = false;
    if (in.Has(kFirst)) {
      auto f = in.Float(kFirst);
      if (!f.ok()) return f.status();
      first = std::abs(*f - *t) < 1e-3;
    }
    if (!first && in.Has(kHistory)) history = *in.Tensor(kHistory);
    auto r = sd::SamplerStep(*schedule, *spec, static_cast<int>(*steps), *t, *latents, *eps, noise, history);
    if (!r.ok()) return r.status();
    out[kLatents] = r->latents;
    out[kDenoised] = r->denoised;
    return absl::OkStatus();
  }

 private:
  v1::SamplerStepOptions options_;
};
SD_REGISTER_NODE(SamplerStep);

}  // namespace sd

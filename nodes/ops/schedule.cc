// Schedule: the model timesteps a sampler visits for `steps` steps, noisiest first (float32; fractional for
// the k-diffusion samplers); img2img's `strength` keeps the last int(steps * strength). `first` is the
// first kept timestep (where img2img adds noise to the encoded image).
//   node { kind: "Schedule" name: "schedule" input: "steps=@steps" input: "strength=@strength"
//          input: "sampler=@sampler" input: "karras=@karras" }
#include <torch/torch.h>

#include "nodes/ops/node.h"
#include "nodes/ops/sampler_inputs.h"
#include "nodes/schedulers/samplers.h"
#include "proto/sd/v1/nodes.pb.h"

namespace sd {

class Schedule : public NodeKernel {
 public:
  static constexpr char kSteps[] = "steps";
  static constexpr char kStrength[] = "strength";
  static constexpr char kTimesteps[] = "timesteps";
  static constexpr char kFirst[] = "first";
  static NodeContract Contract() {
    NodeContract c{{{kSteps, ScalarPort(v1::INT)}, {kStrength, ScalarPort(v1::FLOAT), true, "(0, 1], default 1"}},
                   {{kTimesteps, TensorPort(v1::FLOAT32, 1)}, {kFirst, ScalarPort(v1::FLOAT)}},
                   v1::ScheduleOptions::descriptor(),
                   "inference timesteps of the sampler"};
    AddSamplerPorts(c);
    return c;
  }
  explicit Schedule(const google::protobuf::Any& options) : options_(UnpackOptions<v1::ScheduleOptions>(options)) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    auto steps = in.Int(kSteps);
    if (!steps.ok()) return steps.status();
    double strength = 1.0;
    if (in.Has(kStrength)) {
      auto s = in.Float(kStrength);
      if (!s.ok()) return s.status();
      strength = *s;
    }
    auto spec = ReadSamplerSpec(in, options_.sampler());
    if (!spec.ok()) return spec.status();
    if (*steps < 1 || *steps > 1000) return absl::InvalidArgumentError("Schedule: steps must be between 1 and 1000");
    const NoiseSchedule* schedule = &NoiseSchedule::StableDiffusion();
    auto ts = SamplerTimesteps(*schedule, *spec, static_cast<int>(*steps), strength);
    if (!ts.ok()) return ts.status();
    out[kTimesteps] = torch::tensor(*ts, torch::kFloat64).to(torch::kFloat32);
    out[kFirst] = ts->front();
    return absl::OkStatus();
  }

 private:
  v1::ScheduleOptions options_;
};
SD_REGISTER_NODE(Schedule);

}  // namespace sd

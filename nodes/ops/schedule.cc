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

class Schedule : public NodeKernel, SamplerPorts {
 public:
  static constexpr Input<int64_t> kSteps{"steps"};
  static constexpr OptionalInput<double> kStrength{"strength", "(0, 1], default 1"};
  static constexpr Output<torch::Tensor> kTimesteps{"timesteps", v1::FLOAT32, "?"};
  static constexpr Output<double> kFirst{"first"};
  static NodeContract Contract() {
    return {Ports(kSteps, kStrength, kSampler, kKarras, kEta), Ports(kTimesteps, kFirst),
            v1::ScheduleOptions::descriptor(), "inference timesteps of the sampler"};
  }
  explicit Schedule(const google::protobuf::Any& options) : options_(UnpackOptions<v1::ScheduleOptions>(options)) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    const int64_t steps = in[kSteps];
    SD_ASSIGN_OR_RETURN(const SamplerSpec spec, ReadSamplerSpec(in, options_.sampler()));
    if (steps < 1 || steps > 1000)
      return absl::InvalidArgumentError("Schedule: steps must be between 1 and 1000");
    SD_ASSIGN_OR_RETURN(const std::vector<double> ts,
                        SamplerTimesteps(NoiseSchedule::StableDiffusion(), spec,
                                         static_cast<int>(steps), in[kStrength].value_or(1.0)));
    out.Set(kTimesteps, torch::tensor(ts, torch::kFloat64).to(torch::kFloat32));
    out.Set(kFirst, ts.front());
    return absl::OkStatus();
  }

 private:
  v1::ScheduleOptions options_;
};
SD_REGISTER_NODE(Schedule);

}  // namespace sd

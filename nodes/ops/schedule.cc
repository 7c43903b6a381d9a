// Schedule: the timesteps a sampler visits, noisiest first, for `steps` inference steps; img2img's
// `strength` keeps the last int(steps * strength) of them. `first` is the first kept timestep (where
// img2img adds noise to the encoded image).
//   node { kind: "Schedule" name: "schedule" input: "steps=@steps" input: "strength=@strength" }
#include <torch/torch.h>

#include "nodes/ops/node.h"
#include "nodes/schedulers/ddpm.h"
#include "proto/sd/v1/nodes.pb.h"

namespace sd {

class Schedule : public NodeKernel {
 public:
  static constexpr char kSteps[] = "steps";
  static constexpr char kStrength[] = "strength";
  static constexpr char kTimesteps[] = "timesteps";
  static constexpr char kFirst[] = "first";
  static NodeContract Contract() {
    return {{{kSteps, ScalarPort(v1::INT)}, {kStrength, ScalarPort(v1::FLOAT), true, "(0, 1], default 1"}},
            {{kTimesteps, TensorPort(v1::INT64, 1)}, {kFirst, ScalarPort(v1::INT)}},
            v1::ScheduleOptions::descriptor(), "inference timesteps of the sampler"};
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
    if (!options_.sampler().empty() && options_.sampler() != "ddpm") {
      return absl::InvalidArgumentError("Schedule: unknown sampler '" + options_.sampler() + "' (known: ddpm)");
    }
    if (*steps < 1 || *steps > 1000) return absl::InvalidArgumentError("Schedule: steps must be between 1 and 1000");
    auto sampler = DdpmSampler::Create(NoiseSchedule::ScaledLinear(), static_cast<int>(*steps), strength);
    if (!sampler.ok()) return sampler.status();
    out[kTimesteps] = torch::tensor((*sampler)->timesteps(), torch::kInt64);
    out[kFirst] = (*sampler)->timesteps().front();
    return absl::OkStatus();
  }

 private:
  v1::ScheduleOptions options_;
};
SD_REGISTER_NODE(Schedule);

}  // namespace sd

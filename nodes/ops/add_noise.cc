// AddNoise: forward diffusion of clean latents to timestep t (img2img's starting point).
//   node { kind: "AddNoise" name: "noised" input: "latents=encode.latents" input: "t=schedule.first"
//          input: "noise=add_noise_noise.noise" }
#include "nodes/ops/node.h"
#include "nodes/schedulers/samplers.h"

namespace sd {

class AddNoise : public NodeKernel {
 public:
  static constexpr char kLatents[] = "latents";
  static constexpr char kT[] = "t";
  static constexpr char kNoise[] = "noise";
  static NodeContract Contract() {
    return {{{kLatents, TensorPort(v1::FLOAT32, 4)}, {kT, ScalarPort(v1::FLOAT)}, {kNoise, TensorPort(v1::FLOAT32, 4)}},
            {{kLatents, TensorPort(v1::FLOAT32, 4)}}, nullptr, "sqrt(abar_t) x0 + sqrt(1 - abar_t) noise"};
  }
  explicit AddNoise(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    auto x0 = in.Tensor(kLatents);
    auto t = in.Float(kT);
    auto noise = in.Tensor(kNoise);
    if (!x0.ok()) return x0.status();
    if (!t.ok()) return t.status();
    if (!noise.ok()) return noise.status();
    const NoiseSchedule* schedule = &NoiseSchedule::StableDiffusion();
    auto noised = AddNoiseAt(*schedule, *x0, *t, *noise);
    if (!noised.ok()) return noised.status();
    out[kLatents] = *noised;
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(AddNoise);

}  // namespace sd

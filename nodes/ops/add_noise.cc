// AddNoise: forward diffusion of clean latents to timestep t (img2img's starting point).
//   node { kind: "AddNoise" name: "noised" input: "latents=encode.latents" input: "t=schedule.first"
//          input: "noise=add_noise_noise.noise" }
#include "nodes/ops/node.h"
#include "nodes/schedulers/samplers.h"

namespace sd {

class AddNoise : public NodeKernel {
 public:
  static constexpr Input<torch::Tensor> kLatents{"latents", v1::FLOAT32, "B,C,h,w"};
  static constexpr Input<double> kT{"t"};
  static constexpr Input<torch::Tensor> kNoise{"noise", v1::FLOAT32, "B,C,h,w"};
  static constexpr Output<torch::Tensor> kNoised{"latents", v1::FLOAT32, "B,C,h,w"};
  static NodeContract Contract() {
    return {Ports(kLatents, kT, kNoise), Ports(kNoised), nullptr,
            "sqrt(abar_t) x0 + sqrt(1 - abar_t) noise"};
  }
  explicit AddNoise(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    SD_ASSIGN_OR_RETURN(torch::Tensor noised, AddNoiseAt(NoiseSchedule::StableDiffusion(),
                                                         in[kLatents], in[kT], in[kNoise]));
    out.Set(kNoised, noised);
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(AddNoise);

}  // namespace sd

// CfgCombine: classifier-free guidance, eps = scale * (cond - uncond) + uncond.
//   node { kind: "CfgCombine" name: "cfg" input: "cond=unet_cond.eps" input: "uncond=unet_uncond.eps"
//          input: "scale=@cfg" }
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "nodes/models/model_util.h"
#include "nodes/ops/node.h"

namespace sd {

class CfgCombine : public NodeKernel {
 public:
  static constexpr Input<torch::Tensor> kCond{"cond", v1::FLOAT32, "B,C,h,w"};
  static constexpr Input<torch::Tensor> kUncond{"uncond", v1::FLOAT32, "B,C,h,w"};
  static constexpr Input<double> kScale{"scale"};
  static constexpr Output<torch::Tensor> kEps{"eps", v1::FLOAT32, "B,C,h,w"};
  static NodeContract Contract() {
    return {Ports(kCond, kUncond, kScale), Ports(kEps), nullptr, "classifier-free guidance"};
  }
  explicit CfgCombine(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    const torch::Tensor uncond = in[kUncond];
    out.Set(kEps, static_cast<float>(in[kScale]) * (in[kCond] - uncond) + uncond);
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(CfgCombine);

}  // namespace sd

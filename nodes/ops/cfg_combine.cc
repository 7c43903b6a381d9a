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
  static constexpr char kCond[] = "cond";
  static constexpr char kUncond[] = "uncond";
  static constexpr char kScale[] = "scale";
  static constexpr char kEps[] = "eps";
  static NodeContract Contract() {
    return {{{kCond, TensorPort(v1::FLOAT32, 4)}, {kUncond, TensorPort(v1::FLOAT32, 4)}, {kScale, ScalarPort(v1::FLOAT)}},
            {{kEps, TensorPort(v1::FLOAT32, 4)}}, nullptr, "classifier-free guidance"};
  }
  explicit CfgCombine(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    auto cond = in.Tensor(kCond);
    auto uncond = in.Tensor(kUncond);
    auto scale = in.Float(kScale);
    if (!cond.ok()) return cond.status();
    if (!uncond.ok()) return uncond.status();
    if (!scale.ok()) return scale.status();
    if (cond->sizes() != uncond->sizes()) {
      return absl::InvalidArgumentError(absl::StrCat("CfgCombine: cond is ", DescribeTensor(*cond), " but uncond is ",
                                                     DescribeTensor(*uncond)));
    }
    out[kEps] = static_cast<float>(*scale) * (*cond - *uncond) + *uncond;
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(CfgCombine);

}  // namespace sd

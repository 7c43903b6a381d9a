// UNetStep: one UNet evaluation, eps = UNet(latents, t, context). Classifier-free guidance runs two of
// these (cond and uncond context) so they can go to two workers at once.
//   node { kind: "UNetStep" name: "unet_cond" input: "latents=@loop.latents" input: "t=@loop.t"
//          input: "context=clip_cond.context" }
#include <torch/torch.h>

#include "nodes/ops/model_cache.h"
#include "nodes/ops/node.h"

namespace sd {

class UNetStep : public NodeKernel {
 public:
  static constexpr char kLatents[] = "latents";
  static constexpr char kT[] = "t";
  static constexpr char kContext[] = "context";
  static constexpr char kEps[] = "eps";
  static NodeContract Contract() {
    return {{{kLatents, TensorPort(v1::FLOAT32, 4)}, {kT, ScalarPort(v1::INT)}, {kContext, TensorPort(v1::FLOAT32, 3)}},
            {{kEps, TensorPort(v1::FLOAT32, 4)}}, nullptr, "one UNet evaluation (epsilon prediction)"};
  }
  explicit UNetStep(const google::protobuf::Any&) {}
  absl::Status Open(RunContext& ctx) override {
    auto m = ctx.models->GetUnet(ctx.checkpoint, ctx.dtype, ctx.device);
    if (!m.ok()) return m.status();
    unet_ = *m;
    return absl::OkStatus();
  }
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    auto latents = in.Tensor(kLatents);
    auto t = in.Int(kT);
    auto context = in.Tensor(kContext);
    if (!latents.ok()) return latents.status();
    if (!t.ok()) return t.status();
    if (!context.ok()) return context.status();
    auto eps = unet_->Predict(*latents, torch::tensor({*t}), *context);
    if (!eps.ok()) return eps.status();
    out[kEps] = *eps;
    return absl::OkStatus();
  }

 private:
  UNet unet_{nullptr};
};
SD_REGISTER_NODE(UNetStep);

}  // namespace sd

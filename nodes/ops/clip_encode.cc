// ClipEncode: token ids -> text context, with the run's checkpoint.
//   node { kind: "ClipEncode" name: "clip" input: "tokens=tok.tokens" }
#include "nodes/ops/model_cache.h"
#include "nodes/ops/node.h"

namespace sd {

class ClipEncode : public NodeKernel {
 public:
  static constexpr char kTokens[] = "tokens";
  static constexpr char kContext[] = "context";
  static NodeContract Contract() {
    return {{{kTokens, TensorPort(v1::INT64, 2)}}, {{kContext, TensorPort(v1::FLOAT32, 3), false, "[B, 77, 768]"}},
            nullptr, "CLIP ViT-L/14 text encoder (final LayerNorm output)", true};
  }
  explicit ClipEncode(const google::protobuf::Any&) {}
  absl::Status Open(RunContext& ctx) override {
    auto m = ctx.models->GetClip(ctx.checkpoint, ctx.dtype, ctx.device);
    if (!m.ok()) return m.status();
    clip_ = *m;
    return absl::OkStatus();
  }
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    auto tokens = in.Tensor(kTokens);
    if (!tokens.ok()) return tokens.status();
    auto context = clip_->Encode(*tokens);
    if (!context.ok()) return context.status();
    out[kContext] = context->to(torch::kFloat32);
    return absl::OkStatus();
  }

 private:
  ClipTextModel clip_{nullptr};
};
SD_REGISTER_NODE(ClipEncode);

}  // namespace sd

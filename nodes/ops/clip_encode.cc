// ClipEncode: token ids -> text context, with the run's checkpoint. Each row of `tokens` is encoded
// on its own (a long prompt's chunks are rows). Optional: `vectors` (textual-inversion embeddings,
// standing for the ids from the vocabulary's size on; TokenizePrompt makes both) and `clip_skip`.
//   node { kind: "ClipEncode" name: "clip" input: "tokens=tok.tokens" input: "vectors=tok.vectors"
//          input: "clip_skip=@clip_skip" }
#include "nodes/ops/model_cache.h"
#include "nodes/ops/node.h"

namespace sd {

class ClipEncode : public NodeKernel {
 public:
  static constexpr Input<torch::Tensor> kTokens{"tokens", v1::INT64, "B,L",
                                                "B rows of L token ids"};
  static constexpr OptionalInput<torch::Tensor> kVectors{
      "vectors", v1::FLOAT32, "1,?,?",
      "[1, N, width]: embedding vectors for the ids from the vocabulary's size on ([1, 0, 0]: "
      "none)"};
  static constexpr OptionalInput<int64_t> kClipSkip{
      "clip_skip", "1 (default): the last layer; N: the hidden state N-1 layers before it"};
  static constexpr Output<torch::Tensor> kContext{"context", v1::FLOAT32, "B,L,D",
                                                  "[B, 77, 768] for SD v1.x"};
  static NodeContract Contract() {
    return {Ports(kTokens, kVectors, kClipSkip, kModelInput), Ports(kContext), nullptr,
            "CLIP ViT-L/14 text encoder (final LayerNorm output)", true};
  }
  explicit ClipEncode(const google::protobuf::Any&) {}
  absl::Status Open(RunContext& ctx) override {
    auto m = ctx.models->GetClip(ctx.checkpoint, ctx.dtype, ctx.device);
    if (!m.ok()) return m.status();
    clip_ = *m;
    return absl::OkStatus();
  }
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    const std::optional<torch::Tensor> vectors = in[kVectors];
    SD_ASSIGN_OR_RETURN(
        torch::Tensor context,
        clip_->Encode(in[kTokens], vectors ? vectors->select(0, 0) : torch::Tensor(),
                      in[kClipSkip].value_or(1)));
    out.Set(kContext, context.to(torch::kFloat32));
    return absl::OkStatus();
  }

 private:
  ClipTextModel clip_{nullptr};
};
SD_REGISTER_NODE(ClipEncode);

}  // namespace sd

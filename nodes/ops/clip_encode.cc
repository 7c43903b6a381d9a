// ClipEncode: token ids -> text context, with the run's checkpoint. Each row of `tokens` is encoded
// on its own (a long prompt's chunks are rows). Optional: `vectors` (textual-inversion embeddings,
// standing for the ids from the vocabulary's size on; TokenizePrompt makes both) and `clip_skip`.
//   node { kind: "ClipEncode" name: "clip" input: "tokens=tok.tokens" input: "vectors=tok.vectors"
//          input: "clip_skip=@clip_skip" }
#include "absl/strings/str_cat.h"
#include "nodes/ops/model_cache.h"
#include "nodes/ops/node.h"

namespace sd {

class ClipEncode : public NodeKernel {
 public:
  static constexpr char kTokens[] = "tokens";
  static constexpr char kVectors[] = "vectors";
  static constexpr char kClipSkip[] = "clip_skip";
  static constexpr char kContext[] = "context";
  static NodeContract Contract() {
    return {{{kTokens, TensorPort(v1::INT64, 2)},
             {kVectors, TensorPort(v1::FLOAT32, 3), true,
              "[1, N, width]: embedding vectors for the ids from the vocabulary's size on"},
             {kClipSkip, ScalarPort(v1::INT), true,
              "1 (default): the last layer; N: the hidden state N-1 layers before it"}},
            {{kContext, TensorPort(v1::FLOAT32, 3), false, "[B, 77, 768]"}},
            nullptr,
            "CLIP ViT-L/14 text encoder (final LayerNorm output)",
            true};
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
    torch::Tensor vectors;
    if (in.Has(kVectors)) {
      auto v = in.Tensor(kVectors);
      if (!v.ok()) return v.status();
      if (v->size(0) != 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("input 'vectors': expected [1, N, width], got batch ", v->size(0)));
      }
      vectors = v->select(0, 0);
    }
    int64_t clip_skip = 1;
    if (in.Has(kClipSkip)) {
      auto s = in.Int(kClipSkip);
      if (!s.ok()) return s.status();
      clip_skip = *s;
    }
    auto context = clip_->Encode(*tokens, vectors, clip_skip);
    if (!context.ok()) return context.status();
    out[kContext] = context->to(torch::kFloat32);
    return absl::OkStatus();
  }

 private:
  ClipTextModel clip_{nullptr};
};
SD_REGISTER_NODE(ClipEncode);

}  // namespace sd

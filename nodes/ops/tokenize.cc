// Tokenize: text -> the 77 CLIP token ids SD v1.x conditions on.
//   node { kind: "Tokenize" name: "tok" input: "text=@prompt" }
#include "nodes/ops/model_cache.h"
#include "nodes/ops/node.h"
#include "proto/sd/v1/nodes.pb.h"

namespace sd {

class Tokenize : public NodeKernel {
 public:
  static constexpr char kText[] = "text";
  static constexpr char kTokens[] = "tokens";
  static NodeContract Contract() {
    return {{{kText, ScalarPort(v1::STRING)}},
            {{kTokens, TensorPort(v1::INT64, 2), false, "int64 [1, 77]"}},
            v1::TokenizeOptions::descriptor(),
            "CLIP BPE tokenization with the reference's text cleaning; truncates to 75 tokens + start/end"};
  }
  explicit Tokenize(const google::protobuf::Any& options) : options_(UnpackOptions<v1::TokenizeOptions>(options)) {}
  absl::Status Open(RunContext& ctx) override {
    auto t = ctx.models->Tokenizer(ctx.tokenizer_dir);
    if (!t.ok()) return t.status();
    tokenizer_ = *t;
    return absl::OkStatus();
  }
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    auto text = in.String(kText);
    if (!text.ok()) return text.status();
    const int length = options_.context_length() > 0 ? options_.context_length() : ClipTokenizer::kContextLength;
    Tokenized t = tokenizer_->Encode(*text, length);
    out[kTokens] = torch::tensor(t.ids, torch::kInt64).unsqueeze(0);
    return absl::OkStatus();
  }

 private:
  v1::TokenizeOptions options_;
  std::shared_ptr<const ClipTokenizer> tokenizer_;
};
SD_REGISTER_NODE(Tokenize);

}  // namespace sd

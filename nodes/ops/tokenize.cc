// Tokenize: text -> the 77 CLIP token ids SD v1.x conditions on.
//   node { kind: "Tokenize" name: "tok" input: "text=@prompt" }
#include "nodes/ops/model_cache.h"
#include "nodes/ops/node.h"
#include "proto/sd/v1/nodes.pb.h"

namespace sd {

class Tokenize : public NodeKernel {
 public:
  static constexpr Input<std::string> kText{"text"};
  static constexpr Output<torch::Tensor> kTokens{"tokens", v1::INT64, "1,?", "int64 [1, 77]"};
  static NodeContract Contract() {
    return {Ports(kText), Ports(kTokens), v1::TokenizeOptions::descriptor(),
            "CLIP BPE tokenization with the reference's text cleaning; truncates to 75 tokens + "
            "start/end"};
  }
  explicit Tokenize(const google::protobuf::Any& options) : options_(UnpackOptions<v1::TokenizeOptions>(options)) {}
  absl::Status Open(RunContext& ctx) override {
    auto t = ctx.models->Tokenizer(ctx.tokenizer_dir);
    if (!t.ok()) return t.status();
    tokenizer_ = *t;
    return absl::OkStatus();
  }
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    const int length = options_.context_length() > 0 ? options_.context_length() : ClipTokenizer::kContextLength;
    Tokenized t = tokenizer_->Encode(in[kText], length);
    out.Set(kTokens, torch::tensor(t.ids, torch::kInt64).unsqueeze(0));
    return absl::OkStatus();
  }

 private:
  v1::TokenizeOptions options_;
  std::shared_ptr<const ClipTokenizer> tokenizer_;
};
SD_REGISTER_NODE(Tokenize);

}  // namespace sd

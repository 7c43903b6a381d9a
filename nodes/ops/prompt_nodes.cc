// Prompts as SD users write them: any length (75-token chunks, BREAK), weighting in AUTOMATIC1111's
// or ComfyUI's syntax, textual-inversion words. Tokenizing runs on the host; ClipEncode encodes the
// chunks as a batch (on a worker when distributed); ApplyPromptWeights weights and joins them.
//
//   node { kind: "TokenizePrompt" name: "tok_cond" input: "text=@prompt" input: "other=@negative"
//          input: "weighting=@weighting" }
//   node { kind: "ClipEncode" name: "clip_cond" input: "tokens=tok_cond.tokens"
//          input: "vectors=tok_cond.vectors" input: "clip_skip=@clip_skip" }
//   node { kind: "ApplyPromptWeights" name: "cond" input: "context=clip_cond.context"
//          input: "weights=tok_cond.weights" input: "weighting=@weighting" }
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "nodes/base/status_macros.h"
#include "nodes/models/model_util.h"
#include "nodes/ops/model_cache.h"
#include "nodes/ops/node.h"
#include "nodes/ops/prompt_tokens.h"

namespace sd {
namespace {

struct WeightingPort {
  static constexpr OptionalInput<std::string> kWeighting{"weighting",
                                                         "a1111 (default), comfy or none"};
};

absl::StatusOr<PromptWeighting> WeightingInput(const NodeInputs& in) {
  const std::optional<std::string> name = in[WeightingPort::kWeighting];
  return name ? ParsePromptWeighting(*name) : PromptWeighting::kA1111;
}

// Rows of 77 values (ids or weights) as a [rows, 77] tensor of T's dtype.
template <typename T>
torch::Tensor Rows(const std::vector<std::vector<T>>& rows) {
  torch::Tensor t = torch::empty({static_cast<int64_t>(rows.size()), ClipTokenizer::kContextLength},
                                 c10::CppTypeToScalarType<T>::value);
  for (size_t i = 0; i < rows.size(); ++i)
    std::copy(rows[i].begin(), rows[i].end(), t[static_cast<int64_t>(i)].data_ptr<T>());
  return t;
}

}  // namespace

class TokenizePrompt : public NodeKernel, WeightingPort {
 public:
  static constexpr Input<std::string> kText{"text"};
  static constexpr OptionalInput<std::string> kOther{
      "other", "the other prompt of the guidance pair: the one with fewer chunks gets empty ones"};
  static constexpr Output<torch::Tensor> kTokens{
      "tokens", v1::INT64, "?,L",
      "int64 [K, 77]: one row per chunk (comfy: then the empty prompt's row)"};
  static constexpr Output<torch::Tensor> kWeights{"weights", v1::FLOAT32, "K,L",
                                                  "[K, 77]: each token's weight"};
  static constexpr Output<torch::Tensor> kVectors{
      "vectors", v1::FLOAT32, "1,?,?",
      "[1, N, width]: the textual-inversion vectors the tokens use"};
  static NodeContract Contract() {
    return {Ports(kText, kOther, kWeighting), Ports(kTokens, kWeights, kVectors), nullptr,
            "CLIP tokens of a prompt of any length, in 75-token chunks, with weights and "
            "textual-inversion words (embeddings from the run's embeddings folder)"};
  }
  explicit TokenizePrompt(const google::protobuf::Any&) {}
  absl::Status Open(RunContext& ctx) override {
    SD_ASSIGN_OR_RETURN(tokenizer_, ctx.models->Tokenizer(ctx.tokenizer_dir));
    if (!ctx.embeddings_dir.empty()) {
      SD_ASSIGN_OR_RETURN(library_, ctx.models->Embeddings(ctx.embeddings_dir));
    }
    return absl::OkStatus();
  }
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    SD_ASSIGN_OR_RETURN(PromptWeighting mode, WeightingInput(in));
    SD_ASSIGN_OR_RETURN(PreparedPrompt p,
                        PreparePrompt(in[kText], mode, *tokenizer_, library_.get()));
    if (const std::optional<std::string> other_text = in[kOther]) {
      SD_ASSIGN_OR_RETURN(PreparedPrompt other,
                          PreparePrompt(*other_text, mode, *tokenizer_, library_.get()));
      PadChunks(p.chunks, other.chunks.ids.size(), *tokenizer_);
    }
    std::vector<std::vector<int64_t>> ids = p.chunks.ids;
    if (mode == PromptWeighting::kComfy) ids.push_back(EmptyChunk(*tokenizer_));
    out.Set(kTokens, Rows(ids));
    out.Set(kWeights, Rows(p.chunks.weights));
    out.Set(kVectors, p.Vectors());
    return absl::OkStatus();
  }

 private:
  std::shared_ptr<const ClipTokenizer> tokenizer_;
  std::shared_ptr<EmbeddingLibrary> library_;
};
SD_REGISTER_NODE(TokenizePrompt);

class ApplyPromptWeights : public NodeKernel, WeightingPort {
 public:
  static constexpr Input<torch::Tensor> kContext{"context", v1::FLOAT32, "?,L,D",
                                                 "[K(+1), 77, width]: ClipEncode's chunks"};
  static constexpr Input<torch::Tensor> kWeights{"weights", v1::FLOAT32, "K,L",
                                                 "[K, 77]: TokenizePrompt's weights"};
  static constexpr Output<torch::Tensor> kJoined{"context", v1::FLOAT32, "1,K*L,D",
                                                 "[1, 77*K, width]"};
  static NodeContract Contract() {
    return {Ports(kContext, kWeights, kWeighting), Ports(kJoined), nullptr,
            "weights each token's encoding (a1111: scaled, then each chunk rescaled to its "
            "unweighted mean; comfy: moved from the empty prompt's encoding) and joins the chunks"};
  }
  explicit ApplyPromptWeights(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    const torch::Tensor context = in[kContext], weights = in[kWeights];
    SD_ASSIGN_OR_RETURN(PromptWeighting mode, WeightingInput(in));
    const int64_t k = weights.size(0), rows = k + (mode == PromptWeighting::kComfy ? 1 : 0);
    if (k < 1 || context.size(0) != rows || context.size(1) != weights.size(1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input 'context' ", DescribeTensor(context), " does not fit weights ",
          DescribeTensor(weights), " under ", PromptWeightingName(mode), " weighting: expected ",
          rows, " chunks",
          mode == PromptWeighting::kComfy ? " (the prompt's, then the empty prompt's)" : "",
          " (are both nodes given the same weighting?)"));
    }
    std::vector<torch::Tensor> chunks;
    for (int64_t i = 0; i < k; ++i) {
      torch::Tensor z = context[i], w = weights[i].unsqueeze(-1);  // [77, W], [77, 1]
      if ((w != 1).any().item<bool>()) {
        if (mode == PromptWeighting::kComfy) {
          const torch::Tensor empty = context[k];
          z = torch::where(w != 1, (z - empty) * w + empty, z);
        } else {
          const torch::Tensor before = z.mean();
          z = z * w;
          const torch::Tensor after = z.mean();
          if (after.item<float>() != 0) z = z * (before / after);
        }
      }
      chunks.push_back(z);
    }
    out.Set(kJoined, torch::cat(chunks, 0).unsqueeze(0));
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(ApplyPromptWeights);

}  // namespace sd

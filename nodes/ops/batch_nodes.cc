// Batches of latents or images ([B, ...] tensors): a slice of one, and one repeated (ComfyUI's
// LatentFromBatch and RepeatLatentBatch).
//   node { kind: "BatchSelect" name: "third" input: "tensor=empty.latents" input: "index=@index" }
//   node { kind: "BatchRepeat" name: "four" input: "tensor=encode.latents" input: "amount=@amount"
//   }
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "nodes/base/status_macros.h"
#include "nodes/models/model_util.h"
#include "nodes/ops/node.h"

namespace sd {
namespace {

constexpr int64_t kMaxBatch = 64;

}  // namespace

class BatchSelect : public NodeKernel {
 public:
  static NodeContract Contract() {
    return {
        {{"tensor", TensorPort(v1::FLOAT32, 4), false, "[B, ...]"},
         {"index", ScalarPort(v1::INT), false,
          "the first element taken (clamped to the batch, as ComfyUI)"},
         {"length", ScalarPort(v1::INT), true, "how many (default 1; fewer where the batch ends)"}},
        {{"tensor", TensorPort(v1::FLOAT32, 4), false, "[length, ...]"}},
        nullptr,
        "elements of a batch"};
  }
  explicit BatchSelect(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    SD_ASSIGN_OR_RETURN(torch::Tensor t, in.Tensor("tensor"));
    SD_ASSIGN_OR_RETURN(int64_t index, in.Int("index"));
    int64_t length = 1;
    if (in.Has("length")) {
      SD_ASSIGN_OR_RETURN(length, in.Int("length"));
    }
    if (index < 0 || length < 1) {
      return absl::InvalidArgumentError(absl::StrCat("BatchSelect: index ", index, " and length ",
                                                     length, " must be >= 0 and >= 1"));
    }
    const int64_t b = t.size(0);
    const int64_t first = std::min(index, b - 1), n = std::min(length, b - first);
    out["tensor"] = t.narrow(0, first, n).contiguous();
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(BatchSelect);

class BatchRepeat : public NodeKernel {
 public:
  static NodeContract Contract() {
    return {{{"tensor", TensorPort(v1::FLOAT32, 4), false, "[B, ...]"},
             {"amount", ScalarPort(v1::INT), false, "how many copies of the batch"}},
            {{"tensor", TensorPort(v1::FLOAT32, 4), false, "[B * amount, ...]"}},
            nullptr,
            "a batch repeated"};
  }
  explicit BatchRepeat(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    SD_ASSIGN_OR_RETURN(torch::Tensor t, in.Tensor("tensor"));
    SD_ASSIGN_OR_RETURN(int64_t amount, in.Int("amount"));
    if (amount < 1 || amount * t.size(0) > kMaxBatch) {
      return absl::InvalidArgumentError(absl::StrCat("BatchRepeat: amount ", amount,
                                                     " of a batch of ", t.size(0),
                                                     ": the result must hold 1 to ", kMaxBatch));
    }
    out["tensor"] = t.repeat({amount, 1, 1, 1});
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(BatchRepeat);

}  // namespace sd

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
  static constexpr Input<torch::Tensor> kTensor{"tensor", v1::FLOAT32, "B,C,h,w", "[B, ...]"};
  static constexpr Input<int64_t> kIndex{
      "index", "the first element taken (clamped to the batch, as ComfyUI)"};
  static constexpr OptionalInput<int64_t> kLength{
      "length", "how many (default 1; fewer where the batch ends)"};
  static constexpr Output<torch::Tensor> kSelected{"tensor", v1::FLOAT32, "?,C,h,w",
                                                   "[length, ...]"};
  static NodeContract Contract() {
    return {Ports(kTensor, kIndex, kLength), Ports(kSelected), nullptr, "elements of a batch"};
  }
  explicit BatchSelect(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    const torch::Tensor t = in[kTensor];
    const int64_t index = in[kIndex];
    const int64_t length = in[kLength].value_or(1);
    if (index < 0 || length < 1) {
      return absl::InvalidArgumentError(absl::StrCat("BatchSelect: index ", index, " and length ",
                                                     length, " must be >= 0 and >= 1"));
    }
    const int64_t b = t.size(0);
    const int64_t first = std::min(index, b - 1), n = std::min(length, b - first);
    out.Set(kSelected, t.narrow(0, first, n).contiguous());
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(BatchSelect);

class BatchRepeat : public NodeKernel {
 public:
  static constexpr Input<torch::Tensor> kTensor{"tensor", v1::FLOAT32, "B,C,h,w", "[B, ...]"};
  static constexpr Input<int64_t> kAmount{"amount", "how many copies of the batch"};
  static constexpr Output<torch::Tensor> kRepeated{"tensor", v1::FLOAT32, "B*n,C,h,w",
                                                   "[B * amount, ...]"};
  static NodeContract Contract() {
    return {Ports(kTensor, kAmount), Ports(kRepeated), nullptr, "a batch repeated"};
  }
  explicit BatchRepeat(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    const torch::Tensor t = in[kTensor];
    const int64_t amount = in[kAmount];
    if (amount < 1 || amount * t.size(0) > kMaxBatch) {
      return absl::InvalidArgumentError(absl::StrCat("BatchRepeat: amount ", amount,
                                                     " of a batch of ", t.size(0),
                                                     ": the result must hold 1 to ", kMaxBatch));
    }
    out.Set(kRepeated, t.repeat({amount, 1, 1, 1}));
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(BatchRepeat);

}  // namespace sd

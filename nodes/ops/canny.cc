// Canny: edges of a picture, the usual ControlNet hint.
//   node { kind: "Canny" name: "edges" input: "pixels=@picture" input: "low=@canny_low" input:
//   "high=@canny_high" }
#include "nodes/ops/canny.h"

#include <torch/torch.h>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include "absl/strings/str_cat.h"
#include "nodes/base/status_macros.h"
#include "nodes/models/model_util.h"
#include "nodes/ops/node.h"

namespace sd {

absl::StatusOr<torch::Tensor> CannyEdges(const torch::Tensor& pixels, int64_t low, int64_t high) {
  if (pixels.dim() != 3 || pixels.scalar_type() != torch::kUInt8 || pixels.size(0) < 1 ||
      pixels.size(1) < 1 || (pixels.size(2) != 1 && pixels.size(2) != 3 && pixels.size(2) != 4) ||
      pixels.size(0) > 16384 || pixels.size(1) > 16384) {
    return absl::InvalidArgumentError(
        absl::StrCat("Canny: pixels must be uint8 [H, W, 1, 3 or 4] up to 16384 a side, got ",
                     DescribeTensor(pixels)));
  }
  if (!(0 <= low && low <= high && high <= 1023)) {
    return absl::InvalidArgumentError(absl::StrCat("Canny: thresholds low ", low, ", high ", high,
                                                   ": need 0 <= low <= high <= 1023"));
  }
  const int channels = pixels.size(2) == 1 ? 1 : 3;
  torch::Tensor src = pixels.narrow(2, 0, channels).contiguous();
  const int h = static_cast<int>(src.size(0)), w = static_cast<int>(src.size(1));
  torch::Tensor edges = torch::empty({h, w}, torch::kUInt8);
  try {
    const cv::Mat in(h, w, channels == 1 ? CV_8UC1 : CV_8UC3, src.data_ptr<uint8_t>());
    cv::Mat out(h, w, CV_8UC1, edges.data_ptr<uint8_t>());
    cv::Canny(in, out, static_cast<double>(low), static_cast<double>(high));
    if (out.data != edges.data_ptr<uint8_t>())
      return absl::InternalError("Canny: OpenCV reallocated its output");
  } catch (const cv::Exception& e) {
    return absl::InternalError(absl::StrCat("Canny: OpenCV: ", e.what()));
  }
  return edges.unsqueeze(2).expand({h, w, 3}).contiguous();
}

class Canny : public NodeKernel {
 public:
  static constexpr Input<torch::Tensor> kPixels{"pixels", v1::UINT8, "H,W,?",
                                                "uint8 [H, W, C], C = 1, 3 or 4"};
  static constexpr OptionalInput<int64_t> kLow{"low", "lower hysteresis threshold (default 100)"};
  static constexpr OptionalInput<int64_t> kHigh{"high", "upper hysteresis threshold (default 200)"};
  static constexpr Output<torch::Tensor> kEdges{"pixels", v1::UINT8, "H,W,3",
                                                "uint8 [H, W, 3]: white edges on black"};
  static NodeContract Contract() {
    return {Ports(kPixels, kLow, kHigh), Ports(kEdges), nullptr,
            "Canny edges (OpenCV), the canny ControlNet's hint"};
  }
  explicit Canny(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    SD_ASSIGN_OR_RETURN(torch::Tensor edges,
                        CannyEdges(in[kPixels], in[kLow].value_or(100), in[kHigh].value_or(200)));
    out.Set(kEdges, edges);
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(Canny);

}  // namespace sd

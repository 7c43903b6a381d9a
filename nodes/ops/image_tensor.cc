// ImageToTensor and TensorToImage: between 8-bit images [H, W, 3] and the model's float tensors
// [1, 3, H, W] in [-1, 1], with the reference's arithmetic (x * (2/255) - 1 in; clamp((x + 1) * 127.5, 0,
// 255) truncated to uint8 out).
//   node { kind: "TensorToImage" name: "to_image" input: "image=decode.image" }
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "nodes/models/model_util.h"
#include "nodes/ops/node.h"

namespace sd {

class ImageToTensor : public NodeKernel {
 public:
  static constexpr Input<torch::Tensor> kPixels{"pixels", v1::UINT8, "H,W,3", "uint8 [H, W, 3]"};
  static constexpr Output<torch::Tensor> kImage{"image", v1::FLOAT32, "1,3,H,W",
                                                "[1, 3, H, W] in [-1, 1]"};
  static NodeContract Contract() {
    return {Ports(kPixels), Ports(kImage), nullptr, "uint8 image to model tensor"};
  }
  explicit ImageToTensor(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    torch::Tensor x = in[kPixels].to(torch::kFloat32);
    x = x * static_cast<float>(2.0 / 255.0) + -1.0f;  // the reference's rescale((0, 255) -> (-1, 1)), in float32
    out.Set(kImage, x.permute({2, 0, 1}).unsqueeze(0).contiguous());
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(ImageToTensor);

class TensorToImage : public NodeKernel {
 public:
  static constexpr Input<torch::Tensor> kImage{"image", v1::FLOAT32, "1,3,H,W",
                                               "[1, 3, H, W], about [-1, 1]"};
  static constexpr Output<torch::Tensor> kPixels{"pixels", v1::UINT8, "H,W,3", "uint8 [H, W, 3]"};
  static NodeContract Contract() {
    return {Ports(kImage), Ports(kPixels), nullptr, "model tensor to uint8 image"};
  }
  explicit TensorToImage(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    out.Set(kPixels, Pixels(in[kImage])[0]);
    return absl::OkStatus();
  }
  // [B, 3, H, W] about [-1, 1] -> uint8 [B, H, W, 3]: the reference's rescale((-1, 1) -> (0, 255)),
  // clamped, truncated.
  static torch::Tensor Pixels(const torch::Tensor& image) {
    torch::Tensor x = ((image.to(torch::kFloat32) - -1.0f) * 127.5f + 0.0f).clamp(0.0, 255.0);
    return x.permute({0, 2, 3, 1}).to(torch::kUInt8).contiguous();
  }
};
SD_REGISTER_NODE(TensorToImage);

// A batch of images (ComfyUI's IMAGE): the command line writes one file per image.
class TensorToImages : public NodeKernel {
 public:
  static constexpr Input<torch::Tensor> kImage{"image", v1::FLOAT32, "B,3,H,W",
                                               "[B, 3, H, W], about [-1, 1]"};
  static constexpr Output<torch::Tensor> kPixels{"pixels", v1::UINT8, "B,H,W,3",
                                                 "uint8 [B, H, W, 3]"};
  static NodeContract Contract() {
    return {Ports(kImage), Ports(kPixels), nullptr, "model tensor to a batch of uint8 images"};
  }
  explicit TensorToImages(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    out.Set(kPixels, TensorToImage::Pixels(in[kImage]));
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(TensorToImages);

}  // namespace sd

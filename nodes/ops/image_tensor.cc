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
  static constexpr char kPixels[] = "pixels";
  static constexpr char kImage[] = "image";
  static NodeContract Contract() {
    return {{{kPixels, TensorPort(v1::UINT8, 3), false, "uint8 [H, W, 3]"}},
            {{kImage, TensorPort(v1::FLOAT32, 4), false, "[1, 3, H, W] in [-1, 1]"}}, nullptr, "uint8 image to model tensor"};
  }
  explicit ImageToTensor(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    auto px = in.Tensor(kPixels);
    if (!px.ok()) return px.status();
    if (px->dim() != 3 || px->size(2) != 3) {
      return absl::InvalidArgumentError(absl::StrCat("ImageToTensor: pixels must be uint8 [H, W, 3], got ", DescribeTensor(*px)));
    }
    torch::Tensor x = px->to(torch::kFloat32);
    x = x * static_cast<float>(2.0 / 255.0) + -1.0f;  // the reference's rescale((0, 255) -> (-1, 1)), in float32
    out[kImage] = x.permute({2, 0, 1}).unsqueeze(0).contiguous();
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(ImageToTensor);

class TensorToImage : public NodeKernel {
 public:
  static constexpr char kImage[] = "image";
  static constexpr char kPixels[] = "pixels";
  static NodeContract Contract() {
    return {{{kImage, TensorPort(v1::FLOAT32, 4), false, "[1, 3, H, W], about [-1, 1]"}},
            {{kPixels, TensorPort(v1::UINT8, 3), false, "uint8 [H, W, 3]"}}, nullptr, "model tensor to uint8 image"};
  }
  explicit TensorToImage(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    auto img = in.Tensor(kImage);
    if (!img.ok()) return img.status();
    if (img->dim() != 4 || img->size(0) != 1 || img->size(1) != 3) {
      return absl::InvalidArgumentError(absl::StrCat("TensorToImage: image must be [1, 3, H, W], got ", DescribeTensor(*img)));
    }
    out[kPixels] = Pixels(*img)[0];
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
  static NodeContract Contract() {
    return {{{"image", TensorPort(v1::FLOAT32, 4), false, "[B, 3, H, W], about [-1, 1]"}},
            {{"pixels", TensorPort(v1::UINT8, 4), false, "uint8 [B, H, W, 3]"}},
            nullptr,
            "model tensor to a batch of uint8 images"};
  }
  explicit TensorToImages(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    auto img = in.Tensor("image");
    if (!img.ok()) return img.status();
    if (img->dim() != 4 || img->size(1) != 3) {
      return absl::InvalidArgumentError(
          absl::StrCat("TensorToImages: image must be [B, 3, H, W], got ", DescribeTensor(*img)));
    }
    out["pixels"] = TensorToImage::Pixels(*img);
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(TensorToImages);

}  // namespace sd

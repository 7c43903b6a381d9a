// Image-file node kinds, for graph authors (OpenImageIO: PNG, JPEG, TIFF, EXR, ...). They live with the
// hosts, not in the node library, which builds without OpenImageIO.
//   node { kind: "LoadImage" name: "init" input: "path=@init_path" }
//   node { kind: "LoadMask"  name: "mask" input: "path=@mask_path" }
//   node { kind: "SaveImage" name: "save" input: "pixels=to_image.pixels" input: "path=@out_path" }
#include <torch/torch.h>

#include "host_plugin/cli/image_io.h"
#include "nodes/ops/node.h"

namespace sd {

class LoadImage : public NodeKernel {
 public:
  static constexpr Input<std::string> kPath{"path"};
  static constexpr Output<torch::Tensor> kPixels{"pixels", v1::UINT8, "?,?,3", "uint8 [H, W, 3]"};
  static NodeContract Contract() {
    return {Ports(kPath), Ports(kPixels), nullptr,
            "reads an image file as 8-bit RGB (grey expanded, alpha dropped)"};
  }
  explicit LoadImage(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    SD_ASSIGN_OR_RETURN(torch::Tensor px, ReadImageRgb8(in[kPath]));
    out.Set(kPixels, px);
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(LoadImage);

// A mask is an image whose bright pixels (>= 128 in any channel) mark the region to repaint.
class LoadMask : public LoadImage {
 public:
  static NodeContract Contract() {
    NodeContract c = LoadImage::Contract();
    c.doc = "reads a mask image (white = repaint) as 8-bit RGB";
    return c;
  }
  using LoadImage::LoadImage;
};
SD_REGISTER_NODE(LoadMask);

// ComfyUI's mask of an image file: 1 - alpha by default (LoadImage's MASK), or a colour channel.
class LoadImageMask : public NodeKernel {
 public:
  static constexpr Input<std::string> kPath{"path"};
  static constexpr OptionalInput<std::string> kChannel{
      "channel", "alpha (default: 1 - alpha), red, green or blue"};
  static constexpr Output<torch::Tensor> kMask{"mask", v1::FLOAT32, "1,1,?,?",
                                               "float32 [1, 1, H, W] in [0, 1], 1 = repaint"};
  static NodeContract Contract() {
    return {Ports(kPath, kChannel), Ports(kMask), nullptr,
            "reads a mask from an image file's alpha or a colour channel"};
  }
  explicit LoadImageMask(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    SD_ASSIGN_OR_RETURN(torch::Tensor m, ReadImageMask(in[kPath], in[kChannel].value_or("alpha")));
    out.Set(kMask, m);
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(LoadImageMask);

class SaveImage : public NodeKernel {
 public:
  static constexpr Input<torch::Tensor> kPixels{"pixels", v1::UINT8, "?,?,?"};
  static constexpr Input<std::string> kPath{"path"};
  static constexpr OptionalInput<std::string> kParameters{
      "parameters", "text stored in the file (PNG: a 'parameters' chunk)"};
  static constexpr Output<std::string> kWritten{"path", "the file written"};
  static NodeContract Contract() {
    return {Ports(kPixels, kPath, kParameters), Ports(kWritten), nullptr,
            "writes an image file (temporary file renamed into place)"};
  }
  explicit SaveImage(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    const std::string path = in[kPath];
    std::map<std::string, std::string> meta = {{"Software", "sdgraph"}};
    if (const std::optional<std::string> parameters = in[kParameters])
      meta["parameters"] = *parameters;
    SD_RETURN_IF_ERROR(WriteImageRgb8(path, in[kPixels], meta));
    out.Set(kWritten, path);
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(SaveImage);

std::vector<std::string> ImageNodeKinds() {
  std::vector<std::string> names;
  for (bool registered : {sd_node_registered_LoadImage, sd_node_registered_LoadMask,
                          sd_node_registered_LoadImageMask, sd_node_registered_SaveImage}) {
    if (!registered) return {};
  }
  return {"LoadImage", "LoadMask", "LoadImageMask", "SaveImage"};
}

}  // namespace sd

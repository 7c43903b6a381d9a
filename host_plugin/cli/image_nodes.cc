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
  static NodeContract Contract() {
    return {{{"path", ScalarPort(v1::STRING)}}, {{"pixels", TensorPort(v1::UINT8, 3), false, "uint8 [H, W, 3]"}}, nullptr,
            "reads an image file as 8-bit RGB (grey expanded, alpha dropped)"};
  }
  explicit LoadImage(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    auto path = in.String("path");
    if (!path.ok()) return path.status();
    auto px = ReadImageRgb8(*path);
    if (!px.ok()) return px.status();
    out["pixels"] = *px;
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
  static NodeContract Contract() {
    return {{{"path", ScalarPort(v1::STRING)},
             {"channel", ScalarPort(v1::STRING), true,
              "alpha (default: 1 - alpha), red, green or blue"}},
            {{"mask", TensorPort(v1::FLOAT32, 4), false,
              "float32 [1, 1, H, W] in [0, 1], 1 = repaint"}},
            nullptr,
            "reads a mask from an image file's alpha or a colour channel"};
  }
  explicit LoadImageMask(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    auto path = in.String("path");
    if (!path.ok()) return path.status();
    std::string channel = "alpha";
    if (in.Has("channel")) channel = *in.String("channel");
    auto m = ReadImageMask(*path, channel);
    if (!m.ok()) return m.status();
    out["mask"] = *m;
    return absl::OkStatus();
  }
};
SD_REGISTER_NODE(LoadImageMask);

class SaveImage : public NodeKernel {
 public:
  static NodeContract Contract() {
    return {{{"pixels", TensorPort(v1::UINT8, 3)},
             {"path", ScalarPort(v1::STRING)},
             {"parameters", ScalarPort(v1::STRING), true, "text stored in the file (PNG: a 'parameters' chunk)"}},
            {{"path", ScalarPort(v1::STRING), false, "the file written"}}, nullptr,
            "writes an image file (temporary file renamed into place)"};
  }
  explicit SaveImage(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    auto px = in.Tensor("pixels");
    auto path = in.String("path");
    if (!px.ok()) return px.status();
    if (!path.ok()) return path.status();
    std::map<std::string, std::string> meta = {{"Software", "sdgraph"}};
    if (in.Has("parameters")) meta["parameters"] = *in.String("parameters");
    if (absl::Status s = WriteImageRgb8(*path, *px, meta); !s.ok()) return s;
    out["path"] = *path;
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

#include <torch/torch.h>

#include <cstdio>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "host_plugin/cli/commands.h"
#include "host_plugin/cli/common.h"
#include "host_plugin/cli/convert_args.h"
#include "nodes/models/int8_conv.h"
#include "nodes/models/layers.h"
#include "nodes/weights/checkpoint.h"
#include "nodes/weights/sd_config.h"
#include "nodes/weights/torch_tensors.h"

namespace sd::cli {

namespace {

// --dtype q8 quantizes this tensor: a UNet convolution weight of the shapes the int8 mode takes.
bool Int8Target(const TensorView& v) {
  return absl::StartsWith(v.name, kUNetPrefix) && absl::EndsWith(v.name, ".weight") &&
         v.shape.size() == 4 && IsFloatingPoint(v.dtype) &&
         nn::Int8ConvShape(v.shape[0], v.shape[1], v.shape[2], v.shape[3]);
}

// The int8 weights and their scales (f32 [out], named NAME_scale) of such a tensor.
void AddInt8Tensors(const Checkpoint& c, const TensorView& v, std::vector<TensorToWrite>* tensors) {
  TensorToWrite q;
  q.name = v.name;
  q.dtype = DType::kI8;
  q.shape = v.shape;
  q.nbytes = v.numel;
  q.fill = [&c, &v](void* dst) {
    const torch::Tensor t = nn::QuantizeWeightsPerChannel(ViewAsTorch(v, c.file())).q;
    std::memcpy(dst, t.data_ptr(), t.nbytes());
  };
  TensorToWrite scale;
  scale.name = v.name + "_scale";
  scale.dtype = DType::kF32;
  scale.shape = {v.shape[0]};
  scale.nbytes = v.shape[0] * DTypeSize(DType::kF32);
  scale.fill = [&c, &v](void* dst) {
    const torch::Tensor t = nn::QuantizeWeightsPerChannel(ViewAsTorch(v, c.file())).scale;
    std::memcpy(dst, t.data_ptr(), t.nbytes());
  };
  tensors->push_back(std::move(q));
  tensors->push_back(std::move(scale));
}

}  // namespace

int ConvertCommand(const std::vector<std::string>& argv) {
  int code = kExitOk;
  const std::optional<ConvertArgs> args = ParseConvertArgs(argv, &code);
  if (!args) return code;
  const std::string &in = args->in, &out = args->out;
  const std::optional<DType> dtype = args->dtype;
  auto ckpt = Checkpoint::Open(in);
  if (!ckpt.ok()) return Fail("convert", ckpt.status());
  const Checkpoint& c = **ckpt;
  torch::NoGradGuard no_grad;
  std::vector<TensorToWrite> tensors;
  int quantized = 0;
  for (const TensorView& v : c.tensors()) {
    if (args->int8 && Int8Target(v)) {
      AddInt8Tensors(c, v, &tensors);
      ++quantized;
      continue;
    }
    TensorToWrite w;
    w.name = v.name;
    w.dtype = dtype && IsFloatingPoint(v.dtype) ? *dtype : v.dtype;
    w.shape = v.shape;
    w.nbytes = v.numel * DTypeSize(w.dtype);
    w.fill = [&c, &v, target = w.dtype](void* dst) {
      torch::Tensor t = ViewAsTorch(v, c.file()).to(ToTorchDType(target)).contiguous();
      std::memcpy(dst, t.data_ptr(), t.nbytes());
    };
    tensors.push_back(std::move(w));
  }
  std::map<std::string, std::string> metadata = c.metadata();
  metadata["format"] = "pt";
  metadata["sdgraph.converted_from_sha256"] = c.ContentHash();
  if (args->int8) {
    metadata["sdgraph.int8"] =
        absl::StrCat(quantized,
                     " UNet 3x3 convolution weights in int8, symmetric per output channel: "
                     "weight = int8 value x NAME_scale[output channel] (f32)");
  }
  absl::Status s = WriteSafetensors(out, tensors, metadata);
  if (!s.ok()) return Fail("convert", s);
  std::fprintf(stderr, "sd-graph convert: wrote %zu tensors to %s", tensors.size(), out.c_str());
  if (args->int8) std::fprintf(stderr, " (%d UNet convolution weights in int8)", quantized);
  std::fprintf(stderr, "\n");
  return kExitOk;
}

}  // namespace sd::cli

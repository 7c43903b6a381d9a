#include <torch/torch.h>

#include <cstdio>
#include <optional>

#include "absl/strings/str_cat.h"
#include "host_plugin/cli/commands.h"
#include "host_plugin/cli/common.h"
#include "host_plugin/cli/convert_args.h"
#include "nodes/weights/checkpoint.h"
#include "nodes/weights/torch_tensors.h"

namespace sd::cli {

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
  for (const TensorView& v : c.tensors()) {
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
  absl::Status s = WriteSafetensors(out, tensors, metadata);
  if (!s.ok()) return Fail("convert", s);
  std::fprintf(stderr, "sd-graph convert: wrote %zu tensors to %s\n", tensors.size(), out.c_str());
  return kExitOk;
}

}  // namespace sd::cli

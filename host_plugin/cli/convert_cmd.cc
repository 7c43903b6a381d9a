#include <torch/torch.h>

#include <cstdio>
#include <optional>

#include "absl/strings/str_cat.h"
#include "host_plugin/cli/commands.h"
#include "host_plugin/cli/common.h"
#include "nodes/weights/checkpoint.h"
#include "nodes/weights/torch_tensors.h"

namespace sd::cli {

namespace {
constexpr char kHelp[] =
    "usage: sd-graph convert IN OUT.safetensors [--dtype f32|f16|bf16]\n"
    "\n"
    "Re-saves any supported checkpoint (.safetensors, or a .ckpt read without running code from it) as\n"
    "safetensors, the safe and fast format: every tensor under its original name, made contiguous.\n"
    "Floating-point tensors are converted to --dtype when given (integer buffers such as position_ids\n"
    "keep their type); without --dtype, dtypes are kept. Non-tensor .ckpt entries are dropped.\n"
    "The output is written to a temporary file and renamed into place.\n";
}  // namespace

int ConvertCommand(const std::vector<std::string>& argv) {
  int code = kExitOk;
  auto args = ParseCommandLine("convert", argv, {{"dtype"}, {}}, kHelp, &code);
  if (!args) return code;
  if (args->positionals().size() != 2) {
    std::fprintf(stderr, "sd-graph convert: expected IN and OUT\n\n%s", kHelp);
    return kExitUsage;
  }
  const std::string in = args->positionals()[0], out = args->positionals()[1];
  std::optional<DType> dtype;
  if (auto d = args->Get("dtype")) {
    auto parsed = ParseFloatDType(*d);
    if (!parsed.ok()) {
      std::fprintf(stderr, "sd-graph convert: %s\n", std::string(parsed.status().message()).c_str());
      return kExitUsage;
    }
    dtype = *parsed;
  }
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

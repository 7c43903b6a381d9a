#include "host_plugin/cli/convert_args.h"

#include <cstdio>

#include "host_plugin/cli/commands.h"
#include "host_plugin/cli/common.h"

namespace sd::cli {

namespace {
constexpr char kHelp[] =
    "usage: sd-graph convert IN OUT.safetensors [--dtype f32|f16|bf16|q8]\n"
    "\n"
    "Re-saves any supported checkpoint (.safetensors, or a .ckpt read without running code from "
    "it) as\n"
    "safetensors, the safe and fast format: every tensor under its original name, made "
    "contiguous.\n"
    "Floating-point tensors are converted to --dtype when given (integer buffers such as "
    "position_ids\n"
    "keep their type); without --dtype, dtypes are kept. Non-tensor .ckpt entries are dropped.\n"
    "q8 writes the UNet's 3x3 convolution weights (all but its first and last) as int8, one "
    "scale per\n"
    "output channel in NAME_scale (f32), and keeps every other tensor as it is: such a file "
    "computes\n"
    "those convolutions in int8 (sd-graph txt2img --help, --dtype q8), with about half the "
    "UNet's\n"
    "bytes of an f32 file; on CPUs with VNNI its feed-forward projections are quantized as it "
    "loads,\n"
    "as --dtype q8 does.\n"
    "The output is written to a temporary file and renamed into place.\n";
}  // namespace

std::optional<ConvertArgs> ParseConvertArgs(const std::vector<std::string>& argv, int* exit_code) {
  *exit_code = kExitOk;
  auto args = ParseCommandLine("convert", argv, {{"dtype"}, {}}, kHelp, exit_code);
  if (!args) return std::nullopt;
  if (args->positionals().size() != 2) {
    std::fprintf(stderr, "sd-graph convert: expected IN and OUT\n\n%s", kHelp);
    *exit_code = kExitUsage;
    return std::nullopt;
  }
  ConvertArgs out;
  out.in = args->positionals()[0];
  out.out = args->positionals()[1];
  if (auto d = args->Get("dtype")) {
    auto parsed = ParseComputeDType(*d);
    if (!parsed.ok()) {
      std::fprintf(stderr, "sd-graph convert: %s\n",
                   std::string(parsed.status().message()).c_str());
      *exit_code = kExitUsage;
      return std::nullopt;
    }
    if (parsed->int8) {
      out.int8 = true;
    } else {
      out.dtype = parsed->dtype;
    }
  }
  return out;
}

}  // namespace sd::cli

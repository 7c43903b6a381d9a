// sd-graph: Stable Diffusion v1.x as a graph of nodes. This file only dispatches to the
// subcommands.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "host_plugin/cli/commands.h"
#include "nodes/base/exception_status.h"
#include "nodes/base/runtime_info.h"

namespace {

constexpr char kUsage[] =
    "sd-graph: Stable Diffusion v1.x as a graph of nodes\n"
    "\n"
    "usage: sd-graph COMMAND [ARGS...]   (sd-graph COMMAND --help for its flags)\n"
    "\n"
    "commands:\n"
    "  txt2img --model M --prompt TEXT -o OUT  text to image (the stock graph "
    "graphs/txt2img.pbtxt)\n"
    "  img2img --model M --init IMG --prompt TEXT -o OUT\n"
    "                                          image to image (graphs/img2img.pbtxt)\n"
    "  inpaint --model M --init IMG --mask MASK --prompt TEXT -o OUT\n"
    "                                          repaint the white region of MASK "
    "(graphs/inpaint*.pbtxt)\n"
    "  run GRAPH --model M [--set K=V] -o OUT  run any graph file\n"
    "  tokenize [--tokenizer DIR] TEXT...      print the 77 CLIP token ids of each TEXT as a JSON "
    "array\n"
    "  inspect MODEL [--json]                  format, dtype, detected config, hash and key check "
    "of a\n"
    "                                          .safetensors or .ckpt checkpoint\n"
    "  convert IN OUT.safetensors [--dtype D]  re-save any supported checkpoint as safetensors\n"
    "  make-test-checkpoint OUT.safetensors    write a checkpoint of deterministic test weights\n"
    "                                          (sdgold-v1; full SD v1.5 size or --tiny): images "
    "are noise\n";

int Dispatch(const std::string& command, const std::vector<std::string>& args) {
#ifdef SD_HAVE_OIIO
  if (command == "run") return sd::cli::RunCommand(args);
  if (command == "txt2img") return sd::cli::Txt2ImgCommand(args);
  if (command == "img2img") return sd::cli::Img2ImgCommand(args);
  if (command == "inpaint") return sd::cli::InpaintCommand(args);
#endif
  if (command == "tokenize") return sd::cli::TokenizeCommand(args);
  if (command == "inspect") return sd::cli::InspectCommand(args);
  if (command == "convert") return sd::cli::ConvertCommand(args);
  if (command == "make-test-checkpoint") return sd::cli::MakeTestCheckpointCommand(args);
  std::fprintf(stderr, "sd-graph: unknown command '%s'\n\n%s", command.c_str(), kUsage);
  return sd::cli::kExitUsage;
}

}  // namespace

int main(int argc, char** argv) {
  // The commands that compute may re-execute this program with faster OpenBLAS kernels (not for
  // --help).
  const bool computes =
      argc > 2 && (!std::strcmp(argv[1], "run") || !std::strcmp(argv[1], "txt2img") ||
                   !std::strcmp(argv[1], "img2img") || !std::strcmp(argv[1], "inpaint"));
  bool help = false;
  for (int i = 2; i < argc; ++i) help = help || !std::strcmp(argv[i], "--help");
  if (computes && !help) sd::EnsureFastBlasKernels(argv);
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") ||
      !std::strcmp(argv[1], "help")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? sd::cli::kExitUsage : sd::cli::kExitOk;
  }
  const std::string command = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  // No exception ends this process with std::terminate: whatever a command lets escape (a LibTorch
  // error, a failed allocation) becomes a message and exit code 1.
  int code = sd::cli::kExitFailure;
  const absl::Status s = sd::CatchExceptions(command, [&] {
    code = Dispatch(command, args);
    return absl::OkStatus();
  });
  if (!s.ok()) std::fprintf(stderr, "sd-graph %s\n", s.ToString().c_str());
  return s.ok() ? code : sd::cli::kExitFailure;
}

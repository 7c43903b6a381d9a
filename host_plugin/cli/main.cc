// sd-graph-engine: every sd-graph command, LibTorch loaded. Users run sd-graph (front_main.cc),
// which answers the commands that only read files itself and starts this program for the rest.
// This file only dispatches to the subcommands.
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "host_plugin/cli/commands.h"
#include "host_plugin/cli/usage.h"
#include "nodes/base/cpu_block_cache.h"
#include "nodes/base/exception_status.h"
#include "nodes/base/runtime_info.h"

namespace {

int Dispatch(const std::string& command, const std::vector<std::string>& args) {
#ifdef SD_HAVE_OIIO
  if (command == "run") return sd::cli::RunCommand(args);
  if (command == "txt2img") return sd::cli::Txt2ImgCommand(args);
  if (command == "img2img") return sd::cli::Img2ImgCommand(args);
  if (command == "inpaint") return sd::cli::InpaintCommand(args);
  if (command == "import-comfy") return sd::cli::ImportComfyCommand(args);
  if (command == "export-comfy") return sd::cli::ExportComfyCommand(args);
#endif
  if (command == "tokenize") return sd::cli::TokenizeCommand(args);
  if (command == "kinds") return sd::cli::KindsCommand(args);
  if (command == "cpu") return sd::cli::CpuCommand(args);
  if (command == "inspect") return sd::cli::InspectCommand(args);
  if (command == "convert") return sd::cli::ConvertCommand(args);
  if (command == "make-test-checkpoint") return sd::cli::MakeTestCheckpointCommand(args);
  std::fprintf(stderr, "sd-graph: unknown command '%s'\n\n%s", command.c_str(),
               sd::cli::kSdGraphUsage);
  return sd::cli::kExitUsage;
}

}  // namespace

int main(int argc, char** argv) {
  // The commands that compute may re-execute this program with faster OpenBLAS kernels (not for
  // --help); `cpu` too, so that it reports and measures with the kernels they use.
  const bool computes =
      (argc > 2 && (!std::strcmp(argv[1], "run") || !std::strcmp(argv[1], "txt2img") ||
                    !std::strcmp(argv[1], "img2img") || !std::strcmp(argv[1], "inpaint"))) ||
      (argc > 1 && !std::strcmp(argv[1], "cpu"));
  bool help = false;
  for (int i = 2; i < argc; ++i) help = help || !std::strcmp(argv[i], "--help");
  if (computes && !help) sd::EnsureFastBlasKernels(argv);
  sd::InstallCpuBlockCache();  // before any tensor: freed activations stay mapped for reuse
  if (const std::optional<int> code = sd::cli::AnswerTopLevelHelp(argc, argv)) return *code;
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

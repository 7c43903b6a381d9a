// sd-graph: Stable Diffusion v1.x as a graph of nodes. This is the light front users run: the
// commands that only read files (inspect, tokenize, make-test-checkpoint, and the check of a file
// to convert) run here without LibTorch, so refusing a hostile file costs megabytes, not the
// ~230 MB LibTorch takes on loading; every other command replaces this process with
// sd-graph-engine (same arguments, same PID, so signals and exit codes are the engine's).
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "host_plugin/cli/commands.h"
#include "host_plugin/cli/common.h"
#include "host_plugin/cli/convert_args.h"
#include "host_plugin/cli/usage.h"
#include "nodes/base/file_util.h"
#include "nodes/weights/checkpoint.h"

namespace {

constexpr char kEngine[] = "sd-graph-engine";

int RunEngine(char** argv) {
  const std::string engine = sd::DirOfExecutable() + "/" + kEngine;
  argv[0] = const_cast<char*>(engine.c_str());
  ::execv(engine.c_str(), argv);
  std::fprintf(stderr, "sd-graph: cannot start %s (%s); it is installed beside sd-graph\n",
               engine.c_str(), std::strerror(errno));
  return sd::cli::kExitFailure;
}

}  // namespace

int main(int argc, char** argv) {
  if (const std::optional<int> code = sd::cli::AnswerTopLevelHelp(argc, argv)) return *code;
  const std::string command = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  if (command == "inspect") return sd::cli::InspectCommand(args);
  if (command == "tokenize") return sd::cli::TokenizeCommand(args);
  if (command == "make-test-checkpoint") return sd::cli::MakeTestCheckpointCommand(args);
  if (command == "convert") {  // the file is checked here; the engine converts it
    int code = sd::cli::kExitOk;
    const std::optional<sd::cli::ConvertArgs> parsed = sd::cli::ParseConvertArgs(args, &code);
    if (!parsed) return code;  // --help (0) or bad usage (2)
    if (auto ckpt = sd::Checkpoint::Open(parsed->in); !ckpt.ok())
      return sd::cli::Fail("convert", ckpt.status());
  }
  return RunEngine(argv);
}

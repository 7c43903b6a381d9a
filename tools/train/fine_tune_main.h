// The main() both fine-tuning trainers (sd-train-controlnet, sd-train-inpaint) share: fast BLAS
// kernels, the flags parsed (FineTuneFlagNames() and the trainer's own), --help, the shared flags
// read, the CPU block cache, then the training.
#pragma once

#include <cstdio>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "host_plugin/cli/args.h"
#include "nodes/base/cpu_block_cache.h"
#include "nodes/base/runtime_info.h"
#include "tools/train/fine_tune_options.h"
#include "tools/train/train_flags.h"

namespace sd::train {

struct FineTuneTool {
  const char* name;                   // "sd-train-controlnet": stderr's prefix
  std::string usage;                  // --help's text, also printed after a flag error
  std::set<std::string> extra_flags;  // value flags besides FineTuneFlagNames()
  // Reads the trainer's own flags after the shared ones are in `options`; false (after saying why
  // on stderr) on a bad value.
  std::function<bool(const sd::cli::Args&)> read_extra = [](const sd::cli::Args&) { return true; };
  std::function<absl::Status()> train;  // runs with `options` filled in
};

// Returns the exit status: 0 (also for --help), 2 for bad flags, 1 when training fails.
inline int FineTuneMain(int argc, char** argv, const FineTuneTool& tool, FineTuneOptions* options) {
  sd::EnsureFastBlasKernels(argv);
  const std::vector<std::string> argv_vec(argv + 1, argv + argc);
  sd::cli::FlagSpec spec;
  spec.with_value = FineTuneFlagNames();
  spec.with_value.insert(tool.extra_flags.begin(), tool.extra_flags.end());
  spec.switches = {"help"};
  auto args = sd::cli::Args::Parse(argv_vec, spec);
  if (!args.ok()) {
    std::fprintf(stderr, "%s: %s\n\n%s", tool.name, std::string(args.status().message()).c_str(),
                 tool.usage.c_str());
    return 2;
  }
  if (args->Has("help")) {
    std::fputs(tool.usage.c_str(), stdout);
    return 0;
  }
  if (!ParseFineTuneFlags(tool.name, *args, options) || !tool.read_extra(*args)) return 2;
  // Training allocates and frees the same large activations every step: keep them mapped
  // (nodes/base/cpu_block_cache.h).
  sd::InstallCpuBlockCache();
  const absl::Status s = tool.train();
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", tool.name, s.ToString().c_str());
    return 1;
  }
  return 0;
}

}  // namespace sd::train

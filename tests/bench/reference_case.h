// The reference beside sd-bench (--reference): tests/bench/reference_sd.py, the original PyTorch
// implementation's arithmetic in fp32 on the same checkpoint, run in a child process after the
// cases, so that each speed goal is a ratio measured in one run.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace sd {

// Runs `command` (argv[0] a path or a name on PATH) in a child process with `env` added to its
// environment, waits for it and then passes on what it printed (testing::RunCommand captures it).
// An error when it cannot start or exits other than with status 0.
absl::Status RunProgram(const std::vector<std::string>& command,
                        const std::map<std::string, std::string>& env = {});

struct ReferenceRun {
  std::string torch_version;
  std::map<std::string, double> seconds;         // per sd-bench case: unet2, vae_dec
  std::map<std::string, double> golden_max_abs;  // the reference against the goldens, per stage
};

struct ReferenceOptions {
  std::string python, script, model;
  std::string golden_dir;  // "": the self-check against the goldens is skipped
  int size = 512, threads = 1, repeat = 1;
  std::string json_path;  // where the script writes its numbers
};

// Runs the reference script and reads what it measured.
absl::StatusOr<ReferenceRun> RunReference(const ReferenceOptions& o);

}  // namespace sd

#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "host_plugin/cli/args.h"
#include "nodes/weights/tensor_view.h"

namespace sd::cli {

// Parses `argv` for command `name`; prints `help` for --help (exit 0) or the error (exit 2) and returns
// nullopt with `*exit_code` set when the command should not run.
std::optional<Args> ParseCommandLine(const std::string& name, const std::vector<std::string>& argv,
                                     FlagSpec spec, const char* help, int* exit_code);

// The output file named by -o or --output ("" when neither).
std::string OutputFlag(const Args& args);

// Prints "sd-graph NAME: <status>" to stderr and returns kExitFailure.
int Fail(const std::string& name, const absl::Status& status);

// "f32" | "f16" | "bf16" (also "fp16", "float16", ...) -> dtype.
absl::StatusOr<DType> ParseFloatDType(const std::string& text);
// The same or "q8": f32 with the UNet's int8 layers (nn::UseInt8Layers).
struct ComputeDType {
  DType dtype = DType::kF32;
  bool int8 = false;
};
absl::StatusOr<ComputeDType> ParseComputeDType(const std::string& text);

}  // namespace sd::cli

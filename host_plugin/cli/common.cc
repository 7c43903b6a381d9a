#include "host_plugin/cli/common.h"

#include <cstdio>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "host_plugin/cli/commands.h"

namespace sd::cli {

std::optional<Args> ParseCommandLine(const std::string& name, const std::vector<std::string>& argv,
                                     FlagSpec spec, const char* help, int* exit_code) {
  spec.switches.insert("help");
  absl::StatusOr<Args> args = Args::Parse(argv, spec);
  if (!args.ok()) {
    std::fprintf(stderr, "sd-graph %s: %s\n\n%s", name.c_str(), std::string(args.status().message()).c_str(), help);
    *exit_code = kExitUsage;
    return std::nullopt;
  }
  if (args->Has("help")) {
    std::fputs(help, stdout);
    *exit_code = kExitOk;
    return std::nullopt;
  }
  return *std::move(args);
}

int Fail(const std::string& name, const absl::Status& status) {
  std::fprintf(stderr, "sd-graph %s: %s\n", name.c_str(), status.ToString().c_str());
  return kExitFailure;
}

absl::StatusOr<DType> ParseFloatDType(const std::string& text) {
  const std::string t = absl::AsciiStrToLower(text);
  if (t == "f32" || t == "fp32" || t == "float32" || t == "float") return DType::kF32;
  if (t == "f16" || t == "fp16" || t == "float16" || t == "half") return DType::kF16;
  if (t == "bf16" || t == "bfloat16") return DType::kBF16;
  return absl::InvalidArgumentError(absl::StrCat("unknown dtype '", text, "' (use f32, f16 or bf16)"));
}

absl::StatusOr<ComputeDType> ParseComputeDType(const std::string& text) {
  if (absl::AsciiStrToLower(text) == "q8") return ComputeDType{DType::kF32, true};
  auto d = ParseFloatDType(text);
  if (!d.ok())
    return absl::InvalidArgumentError(
        absl::StrCat("unknown dtype '", text, "' (use f32, f16, bf16 or q8)"));
  return ComputeDType{*d, false};
}

std::string OutputFlag(const Args& args) {
  return args.Has("o") ? *args.Get("o") : args.GetOr("output", "");
}

}  // namespace sd::cli

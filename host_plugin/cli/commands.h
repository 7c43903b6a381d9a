// The subcommands of sd-graph. Each takes the arguments after its name and returns the process exit code:
// 0 success, 1 the work failed (the message says why), 2 bad usage.
#pragma once

#include <string>
#include <vector>

namespace sd::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

int TokenizeCommand(const std::vector<std::string>& args);
int KindsCommand(const std::vector<std::string>& args);
int CpuCommand(const std::vector<std::string>& args);
int InspectCommand(const std::vector<std::string>& args);
int ConvertCommand(const std::vector<std::string>& args);
int MakeTestCheckpointCommand(const std::vector<std::string>& args);
int RunCommand(const std::vector<std::string>& args);
int Txt2ImgCommand(const std::vector<std::string>& args);
int Img2ImgCommand(const std::vector<std::string>& args);
int InpaintCommand(const std::vector<std::string>& args);
int ImportComfyCommand(const std::vector<std::string>& args);
int ExportComfyCommand(const std::vector<std::string>& args);

}  // namespace sd::cli

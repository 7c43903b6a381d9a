// What the generating commands (run, txt2img, img2img, inpaint) share besides running the graph:
// their names, output file names for batches and farm frames, the exit codes farm managers act on,
// and the sampler labels other SD tools write.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sd::cli {

enum class Mode { kRun, kTxt2Img, kImg2Img, kInpaint };
const char* ModeName(Mode mode);

// Exit codes farm managers can act on (besides 0, 1 and 2 of commands.h).
inline constexpr int kExitMissing = 3;
inline constexpr int kExitRetry = 75;  // EX_TEMPFAIL
inline constexpr int kExitCancelled = 130;
// UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED: retry later; CANCELLED: 130; NOT_FOUND: 3; a bad
// argument, precondition or unimplemented feature: 2; anything else 1.
int ExitCodeFor(const absl::Status& s);
// Prints "sd-graph NAME: MESSAGE" and returns kExitUsage (2).
int UsageError(const std::string& name, const std::string& message);
// Prints "sd-graph NAME: <status>" and returns ExitCodeFor(s).
int FailWithCode(const std::string& name, const absl::Status& s);

// OUT for one image; OUT-1.png, OUT-2.png, ... for a batch.
std::string NumberedOutput(const std::string& out, int index, int batch);
// "A-B" or "A-B:S" -> frame numbers (INVALID_ARGUMENT naming --frames).
absl::StatusOr<std::vector<int64_t>> ParseFrames(const std::string& text);
// out/frame_%04d.png -> out/frame_0007.png (one %d, %Nd or %0Nd conversion).
absl::StatusOr<std::string> FramePath(const std::string& pattern, int64_t frame);
std::string ReplaceAll(std::string s, const std::string& from, const std::string& to);
// The file name of a path (what follows the last '/').
std::string Basename(const std::string& path);

// The sampler names other SD tools write in "parameters" ("DPM++ 2M Karras").
std::string SamplerLabel(const std::string& name, bool karras);

}  // namespace sd::cli

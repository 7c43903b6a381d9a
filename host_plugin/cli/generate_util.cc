#include "host_plugin/cli/generate_util.h"

#include <cctype>
#include <cstdio>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "host_plugin/cli/commands.h"
#include "host_plugin/cli/common.h"

namespace sd::cli {

const char* ModeName(Mode mode) {
  switch (mode) {
    case Mode::kRun:
      return "run";
    case Mode::kTxt2Img:
      return "txt2img";
    case Mode::kImg2Img:
      return "img2img";
    case Mode::kInpaint:
      return "inpaint";
  }
  return "";
}

std::string NumberedOutput(const std::string& out, int index, int batch) {
  if (batch <= 1) return out;
  const size_t dot = out.rfind('.');
  const size_t slash = out.rfind('/');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash))
    return absl::StrCat(out, "-", index + 1);
  return absl::StrCat(out.substr(0, dot), "-", index + 1, out.substr(dot));
}

// The sampler names other SD tools write in "parameters".
std::string SamplerLabel(const std::string& name, bool karras) {
  const std::map<std::string, std::string> labels = {{"ddpm", "DDPM"},
                                                     {"ddim", "DDIM"},
                                                     {"euler", "Euler"},
                                                     {"euler_a", "Euler a"},
                                                     {"euler_ancestral", "Euler a"},
                                                     {"dpmpp_2m", "DPM++ 2M"}};
  auto it = labels.find(name);
  return (it == labels.end() ? name : it->second) + (karras ? " Karras" : "");
}

int ExitCodeFor(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kAborted:
      return kExitRetry;
    case absl::StatusCode::kCancelled:
      return kExitCancelled;
    case absl::StatusCode::kNotFound:
      return kExitMissing;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kUnimplemented:
      return kExitUsage;
    default:
      return kExitFailure;
  }
}

// "A-B" or "A-B:S" -> frame numbers.
absl::StatusOr<std::vector<int64_t>> ParseFrames(const std::string& text) {
  std::string range = text;
  int64_t step = 1;
  if (size_t colon = text.find(':'); colon != std::string::npos) {
    range = text.substr(0, colon);
    if (!absl::SimpleAtoi(text.substr(colon + 1), &step) || step < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--frames ", text, ": the step must be a positive integer"));
    }
  }
  int64_t a, b;
  const size_t dash = range.find('-', 1);
  if (dash == std::string::npos) {
    if (!absl::SimpleAtoi(range, &a))
      return absl::InvalidArgumentError(absl::StrCat("--frames ", text, " is not A-B[:S]"));
    b = a;
  } else if (!absl::SimpleAtoi(range.substr(0, dash), &a) ||
             !absl::SimpleAtoi(range.substr(dash + 1), &b)) {
    return absl::InvalidArgumentError(absl::StrCat("--frames ", text, " is not A-B[:S]"));
  }
  if (b < a || (b - a) / step > 1000000)
    return absl::InvalidArgumentError(absl::StrCat("--frames ", text, ": B must be >= A"));
  std::vector<int64_t> frames;
  for (int64_t f = a; f <= b; f += step) frames.push_back(f);
  return frames;
}

// out/frame_%04d.png -> out/frame_0007.png (one %d, %Nd or %0Nd conversion).
absl::StatusOr<std::string> FramePath(const std::string& pattern, int64_t frame) {
  const size_t pct = pattern.find('%');
  if (pct == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("-o ", pattern, ": farm mode needs a frame pattern such as frame_%04d.png"));
  }
  size_t end = pct + 1;
  while (end < pattern.size() && std::isdigit(static_cast<unsigned char>(pattern[end]))) ++end;
  if (end >= pattern.size() || pattern[end] != 'd' || pattern.find('%', end) != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("-o ", pattern, ": use exactly one %d, %4d or %04d"));
  }
  const std::string spec = pattern.substr(pct + 1, end - pct - 1);
  const int width = spec.empty() ? 0 : std::stoi(spec);
  std::string num = std::to_string(frame < 0 ? -frame : frame);
  const char fill = !spec.empty() && spec[0] == '0' ? '0' : ' ';
  while (static_cast<int>(num.size()) < width - (frame < 0 ? 1 : 0)) num.insert(num.begin(), fill);
  if (frame < 0) num.insert(num.begin(), '-');
  return pattern.substr(0, pct) + num + pattern.substr(end + 1);
}

int UsageError(const std::string& name, const std::string& message) {
  std::fprintf(stderr, "sd-graph %s: %s\n", name.c_str(), message.c_str());
  return kExitUsage;
}

int FailWithCode(const std::string& name, const absl::Status& s) {
  Fail(name, s);
  return ExitCodeFor(s);
}

std::string Basename(const std::string& path) { return path.substr(path.rfind('/') + 1); }

std::string ReplaceAll(std::string s, const std::string& from, const std::string& to) {
  for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size()))
    s.replace(p, from.size(), to);
  return s;
}

}  // namespace sd::cli

#include "host_plugin/cli/controlnet_flags.h"

#include <torch/torch.h>

#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "host_plugin/cli/image_io.h"
#include "nodes/base/status_macros.h"
#include "nodes/ops/canny.h"

namespace sd::cli {
namespace {

// Value k of a flag given once for all or once per ControlNet ("" when not given).
std::string Per(const std::vector<std::string>& values, size_t k) {
  if (values.empty()) return "";
  return values.size() == 1 ? values[0] : values[k];
}

absl::StatusOr<double> Number(const std::string& flag, const std::string& text, double lo,
                              double hi) {
  double v = 0;
  if (!absl::SimpleAtod(text, &v) || !(v >= lo && v <= hi)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " ", text, ": expected a number from ", lo, " to ", hi));
  }
  return v;
}

std::string Suffix(size_t k) { return k == 0 ? "" : absl::StrCat("_", k); }

}  // namespace

const std::vector<std::string>& ControlNetRepeatableFlags() {
  static const std::vector<std::string> flags = {"--controlnet", "--hint", "--control-strength",
                                                 "--control-start", "--control-end"};
  return flags;
}

std::vector<std::string>* ControlNetFlagList(ControlNetFlags& f, const std::string& flag) {
  if (flag == "--controlnet") return &f.files;
  if (flag == "--hint") return &f.hints;
  if (flag == "--control-strength") return &f.strengths;
  if (flag == "--control-start") return &f.starts;
  if (flag == "--control-end") return &f.ends;
  return nullptr;
}

absl::Status CheckControlNetFlags(const ControlNetFlags& f) {
  if (!f.any() && !f.guess_mode && !f.cond_only && f.pass == "image" && f.canny_low == 100 &&
      f.canny_high == 200)
    return absl::OkStatus();
  if (f.files.empty())
    return absl::InvalidArgumentError("the ControlNet flags need --controlnet FILE");
  if (!f.hints.empty() && f.hints.size() != f.files.size()) {
    return absl::InvalidArgumentError(absl::StrCat("--controlnet is given ", f.files.size(),
                                                   " time(s) but --hint ", f.hints.size(),
                                                   ": give one hint image per ControlNet"));
  }
  for (const auto& [flag, values, lo, hi] :
       {std::tuple{"control-strength", &f.strengths, -10.0, 10.0},
        {"control-start", &f.starts, 0.0, 1.0},
        {"control-end", &f.ends, 0.0, 1.0}}) {
    if (values->size() > 1 && values->size() != f.files.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, " is given ", values->size(),
                       " times: give it once (for every ControlNet) or once per "
                       "--controlnet (",
                       f.files.size(), ")"));
    }
    for (const std::string& v : *values) SD_RETURN_IF_ERROR(Number(flag, v, lo, hi).status());
  }
  for (size_t k = 0; k < f.files.size(); ++k) {
    double start = 0, end = 1;
    if (!Per(f.starts, k).empty()) absl::SimpleAtod(Per(f.starts, k), &start);
    if (!Per(f.ends, k).empty()) absl::SimpleAtod(Per(f.ends, k), &end);
    if (start > end) {
      return absl::InvalidArgumentError(absl::StrCat("ControlNet ", k, ": --control-start ", start,
                                                     " is after --control-end ", end));
    }
  }
  if (f.pass != "image" && f.pass != "canny" && f.pass != "depth" && f.pass != "normal") {
    return absl::InvalidArgumentError(
        absl::StrCat("--hint-pass ", f.pass, ": expected image, canny, depth or normal"));
  }
  if (!(0 <= f.canny_low && f.canny_low <= f.canny_high && f.canny_high <= 1023)) {
    return absl::InvalidArgumentError(absl::StrCat("--canny-low ", f.canny_low, " --canny-high ",
                                                   f.canny_high,
                                                   ": need 0 <= low <= high <= 1023"));
  }
  return absl::OkStatus();
}

absl::Status SetControlNetInputs(const ControlNetFlags& f, const Graph& graph,
                                 std::map<std::string, Value>* inputs) {
  if (f.files.empty()) return absl::OkStatus();
  if (f.hints.empty()) {
    // A graph that finds its hints itself (an imported ComfyUI workflow's LoadImage) needs none.
    if (graph.Input("hint"))
      return absl::InvalidArgumentError("--controlnet needs its --hint IMAGE (one per ControlNet)");
    return absl::OkStatus();
  }
  if (!graph.Input("hint")) {
    return absl::InvalidArgumentError(
        "--hint: this graph has no `hint` input (the stock txt2img_controlnet and "
        "img2img_controlnet graphs have one)");
  }
  auto set = [&](const std::string& key, Value v) {
    if (graph.Input(key)) (*inputs)[key] = std::move(v);
  };
  for (size_t k = 0; k < f.files.size(); ++k) {
    if (!graph.Input("hint" + Suffix(k))) {
      return absl::InvalidArgumentError(
          absl::StrCat("this graph takes ", k, " ControlNet hint(s), not ", f.files.size()));
    }
    if (f.pass == "image" || f.pass == "canny") {
      SD_ASSIGN_OR_RETURN(torch::Tensor px, ReadImageRgb8(f.hints[k]));
      if (f.pass == "canny") {
        SD_ASSIGN_OR_RETURN(px, CannyEdges(px, f.canny_low, f.canny_high));
      }
      set("hint" + Suffix(k), px);
    } else {
      SD_ASSIGN_OR_RETURN(torch::Tensor values, ReadImageValues(f.hints[k]));
      set("hint_values" + Suffix(k), values);
    }
    for (const auto& [key, values] : {std::pair{"control_strength", &f.strengths},
                                      {"control_start", &f.starts},
                                      {"control_end", &f.ends}}) {
      double v = 0;
      if (absl::SimpleAtod(Per(*values, k), &v)) set(key + Suffix(k), v);
    }
  }
  if (f.pass == "depth" || f.pass == "normal") set("hint_normalize", f.pass);
  if (f.guess_mode) set("guess_mode", int64_t{1});
  if (f.guess_mode || f.cond_only) set("control_uncond", int64_t{0});
  return absl::OkStatus();
}

std::string ControlNetParameters(const ControlNetFlags& f,
                                 const std::vector<std::string>& sha256s) {
  std::string out;
  const char* mode = f.guess_mode  ? "ControlNet is more important"
                     : f.cond_only ? "My prompt is more important"
                                   : "Balanced";
  for (size_t k = 0; k < f.files.size(); ++k) {
    const std::string strength = Per(f.strengths, k), start = Per(f.starts, k),
                      end = Per(f.ends, k);
    absl::StrAppend(
        &out, k ? ", " : "", "ControlNet ", k, ": \"module: ", f.pass == "image" ? "none" : f.pass,
        f.pass == "canny" ? absl::StrCat(" (", f.canny_low, ", ", f.canny_high, ")") : "",
        ", model: ", std::filesystem::path(f.files[k]).stem().string(), " (",
        k < sha256s.size() ? sha256s[k].substr(0, 10) : "",
        "), weight: ", strength.empty() ? "1" : strength, ", starting/ending: (",
        start.empty() ? "0" : start, ", ", end.empty() ? "1" : end, "), control mode: ", mode,
        "\"");
  }
  return out;
}

}  // namespace sd::cli

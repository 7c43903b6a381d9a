// sd-graph txt2img / img2img / run: the ControlNet flags.
//
//   --controlnet FILE --hint IMAGE      (repeatable, in pairs: several ControlNets add their
//   residuals)
//   --control-strength S --control-start A --control-end B   (once for all, or once per ControlNet)
//   --hint-pass image|depth|normal      how --hint files are read (default image: the picture as
//   is)
//   --guess-mode, --control-cond-only
//
// The files join the model reference (`|control=FILE`, model_ref.h); the stock graphs
// txt2img_controlnet / img2img_controlnet take the rest as graph inputs (control_graph.h adds the
// second and later ControlNets).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "host_plugin/runtime/graph.h"
#include "nodes/ops/node.h"

namespace sd::cli {

struct ControlNetFlags {
  std::vector<std::string> files, hints, strengths, starts, ends;
  std::string pass = "image";
  int64_t canny_low = 100, canny_high = 200;
  bool guess_mode = false, cond_only = false;
  bool any() const {
    return !files.empty() || !hints.empty() || !strengths.empty() || !starts.empty() ||
           !ends.empty();
  }
};

// The repeatable flags this module reads (collected from argv by the caller) and the others.
const std::vector<std::string>& ControlNetRepeatableFlags();
std::vector<std::string>* ControlNetFlagList(ControlNetFlags& f, const std::string& flag);

// INVALID_ARGUMENT for a hint count that differs from the file count (none is allowed: a graph may
// find its hints itself), a per-ControlNet flag given
// neither once nor once per file, numbers out of range or an unknown --hint-pass.
absl::Status CheckControlNetFlags(const ControlNetFlags& f);

// Reads the hints and sets the ControlNet graph inputs the graph has (hint[_K] or hint_values[_K],
// hint_normalize, control_strength[_K], control_start[_K], control_end[_K], guess_mode,
// control_uncond). INVALID_ARGUMENT when the graph has no `hint` input; errors of a hint file name
// it.
absl::Status SetControlNetInputs(const ControlNetFlags& f, const Graph& graph,
                                 std::map<std::string, Value>* inputs);

// The PNG parameters entries: `ControlNet 0: "module: none, model: NAME (HASH10), weight: 1,
// starting/ending: (0, 1), control mode: Balanced"`, comma-separated, as other SD tools write them.
std::string ControlNetParameters(const ControlNetFlags& f, const std::vector<std::string>& sha256s);

}  // namespace sd::cli

// Which stock graph (graphs/*.pbtxt) a front end runs, and where the stock graphs are found, for
// every host: $SDGRAPH_GRAPHS, then the install tree next to the host binary or plugin
// (`<anchor>/../share/sdgraph/graphs`, or `../../share/...` from lib/gegl-0.4), then the source
// tree.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace sd {

// `anchor_dir`: the directory of the running binary or plugin ("" : not known).
std::string StockGraphPath(const std::string& name, const std::string& anchor_dir);

// The graph library, where imports not found beside the importing file are looked for: the `lib`
// folders of $SDGRAPH_GRAPHS, of the install tree and of the source tree, those that exist.
std::vector<std::string> GraphLibraryDirs(const std::string& anchor_dir);

// What a front end (the CLI, the GEGL operations) asks for.
struct StockRequest {
  std::string mode;              // "txt2img", "img2img" or "inpaint"
  bool controlnet = false;       // a ControlNet steers it (txt2img, img2img)
  bool hires = false;            // txt2img's second pass at a larger size
  int64_t unet_in_channels = 4;  // inpaint: 9 means an inpainting checkpoint
};
// The stock graph's file name ("txt2img_controlnet.pbtxt", "inpaint9.pbtxt", ...), or
// INVALID_ARGUMENT for combinations no stock graph covers (a ControlNet with inpainting or the
// hires fix, an unknown mode).
absl::StatusOr<std::string> StockGraphFor(const StockRequest& request);

}  // namespace sd

#include "host_plugin/runtime/stock_graphs.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>

#ifndef SD_SOURCE_GRAPHS_DIR
#define SD_SOURCE_GRAPHS_DIR ""
#endif

namespace sd {

std::string StockGraphPath(const std::string& name, const std::string& anchor_dir) {
  if (const char* env = std::getenv("SDGRAPH_GRAPHS"); env && *env)
    return std::string(env) + "/" + name;
  if (!anchor_dir.empty()) {
    // bin/ -> ../share; lib/gegl-0.4/ (the plugin) -> ../../share
    for (const char* up : {"/../share/sdgraph/graphs/", "/../../share/sdgraph/graphs/"}) {
      const std::string installed = anchor_dir + up + name;
      if (std::ifstream(installed).good()) return installed;
    }
  }
  return std::string(SD_SOURCE_GRAPHS_DIR) + "/" + name;
}

std::vector<std::string> GraphLibraryDirs(const std::string& anchor_dir) {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("SDGRAPH_GRAPHS"); env && *env)
    candidates.push_back(std::string(env) + "/lib");
  if (!anchor_dir.empty()) {
    for (const char* up : {"/../share/sdgraph/graphs/lib", "/../../share/sdgraph/graphs/lib"})
      candidates.push_back(anchor_dir + up);
  }
  candidates.push_back(std::string(SD_SOURCE_GRAPHS_DIR) + "/lib");
  std::vector<std::string> dirs;
  for (const std::string& c : candidates) {
    std::error_code ec;
    if (std::filesystem::is_directory(c, ec)) dirs.push_back(c);
  }
  return dirs;
}

absl::StatusOr<std::string> StockGraphFor(const StockRequest& r) {
  if (r.mode == "txt2img") {
    if (r.hires && r.controlnet)
      return absl::InvalidArgumentError("a ControlNet does not combine with the hires fix");
    return r.hires        ? "hires_fix.pbtxt"
           : r.controlnet ? "txt2img_controlnet.pbtxt"
                          : "txt2img.pbtxt";
  }
  if (r.hires) return absl::InvalidArgumentError("the hires fix applies to txt2img");
  if (r.mode == "img2img") return r.controlnet ? "img2img_controlnet.pbtxt" : "img2img.pbtxt";
  if (r.mode == "inpaint") {
    if (r.controlnet)
      return absl::InvalidArgumentError("a ControlNet does not combine with inpainting (yet)");
    return r.unet_in_channels == 9 ? "inpaint9.pbtxt" : "inpaint.pbtxt";
  }
  return absl::InvalidArgumentError("unknown mode '" + r.mode + "' (txt2img, img2img, inpaint)");
}

}  // namespace sd

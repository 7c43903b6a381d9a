#include "host_plugin/runtime/stock_graphs.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "nodes/base/install_dirs.h"

#ifndef SD_SOURCE_GRAPHS_DIR
#define SD_SOURCE_GRAPHS_DIR ""
#endif

namespace sd {

namespace {

// The stock graphs' folders of an install tree next to `anchor_dir` (install_dirs.h).
std::vector<std::string> InstalledGraphDirs(const std::string& anchor_dir) {
  return InstalledDataDirs(anchor_dir, "graphs");
}

const char* GraphsFromEnvironment() {
  const char* env = std::getenv("SDGRAPH_GRAPHS");
  return env && *env ? env : nullptr;
}

}  // namespace

std::string StockGraphPath(const std::string& name, const std::string& anchor_dir) {
  if (const char* env = GraphsFromEnvironment()) return std::string(env) + "/" + name;
  for (const std::string& dir : InstalledGraphDirs(anchor_dir)) {
    const std::string installed = dir + "/" + name;
    if (std::ifstream(installed).good()) return installed;
  }
  return std::string(SD_SOURCE_GRAPHS_DIR) + "/" + name;
}

std::vector<std::string> GraphLibraryDirs(const std::string& anchor_dir) {
  std::vector<std::string> candidates = InstalledGraphDirs(anchor_dir);
  if (const char* env = GraphsFromEnvironment()) candidates.insert(candidates.begin(), env);
  candidates.push_back(SD_SOURCE_GRAPHS_DIR);
  std::vector<std::string> dirs;
  for (const std::string& c : candidates) {
    std::error_code ec;
    if (std::filesystem::is_directory(c + "/lib", ec)) dirs.push_back(c + "/lib");
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

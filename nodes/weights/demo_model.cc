#include "nodes/weights/demo_model.h"

#include <cstdlib>

#include "absl/strings/numbers.h"
#include "nodes/base/file_util.h"
#include "nodes/base/install_dirs.h"

namespace sd {

std::string DemoModelPath(const std::string& anchor_dir) {
  if (const char* env = std::getenv("SDGRAPH_DEMO_MODEL"); env && *env)
    return IsReadableFile(env) ? env : "";
  if (std::string dir = FindInstalledDir(anchor_dir, "models", kDemoModelFile); !dir.empty())
    return dir + "/" + kDemoModelFile;
  return ShippedModelPath(kDemoModelFile);
}

std::string DemoInpaintModelPath(const std::string& anchor_dir) {
  if (const char* env = std::getenv("SDGRAPH_DEMO_INPAINT_MODEL"); env && *env)
    return IsReadableFile(env) ? env : "";
  if (const char* env = std::getenv("SDGRAPH_DEMO_MODEL"); env && *env)
    return IsReadableFile(env) ? env : "";
  if (std::string dir = FindInstalledDir(anchor_dir, "models", kDemoInpaintModelFile); !dir.empty())
    return dir + "/" + kDemoInpaintModelFile;
  return ShippedModelPath(kDemoInpaintModelFile);
}

std::string DefaultModel(bool on_workers, const std::string& anchor_dir, bool inpainting) {
  if (on_workers) return inpainting ? kDemoInpaintModelFile : kDemoModelFile;
  if (inpainting) {
    if (std::string path = DemoInpaintModelPath(anchor_dir); !path.empty()) return path;
  }
  return DemoModelPath(anchor_dir);
}

std::string ShippedModelPath(const std::string& file) {
  if (std::string dir = FindInstalledDir(DirOfExecutable(), "models", file); !dir.empty())
    return dir + "/" + file;
  const std::string source = std::string(SD_SOURCE_MODELS_DIR) + "/" + file;
  return IsReadableFile(source) ? source : "";
}

std::string ShippedPathOf(const std::string& name) {
  for (const char* shipped : {kDemoModelFile, kDemoControlNetFile, kDemoInpaintModelFile}) {
    if (name != shipped && name + ".safetensors" != shipped) continue;
    if (std::string(shipped) == kDemoModelFile) return DemoModelPath();
    if (std::string(shipped) == kDemoInpaintModelFile) return DemoInpaintModelPath();
    return ShippedModelPath(shipped);
  }
  return "";
}

std::string ResolveShippedName(const std::string& name) {
  if (IsReadableFile(name)) return name;
  const std::string shipped = ShippedPathOf(name);
  return shipped.empty() ? name : shipped;
}

std::optional<int> NativeSize(const std::map<std::string, std::string>& metadata) {
  const auto it = metadata.find(kNativeSizeKey);
  int v = 0;
  if (it == metadata.end() || !absl::SimpleAtoi(it->second, &v) || v < 8 || v > 8192 ||
      v % 8 != 0) {
    return std::nullopt;
  }
  return v;
}

}  // namespace sd

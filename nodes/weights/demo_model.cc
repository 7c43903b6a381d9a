#include "nodes/weights/demo_model.h"

#include <cstdlib>
#include <optional>
#include <string>

#include "absl/strings/numbers.h"
#include "nodes/base/file_util.h"
#include "nodes/base/install_dirs.h"

namespace sd {

namespace {

// The file environment variable `name` names: nullopt when unset or empty, "" when unreadable.
std::optional<std::string> FileFromEnv(const char* name) {
  const char* env = std::getenv(name);
  if (!env || !*env) return std::nullopt;
  return IsReadableFile(env) ? std::string(env) : std::string();
}

// Shipped file `file` next to `anchor_dir` (as FindInstalledDir looks), else ShippedModelPath.
std::string InstalledModelPath(const std::string& anchor_dir, const char* file) {
  if (std::string dir = FindInstalledDir(anchor_dir, "models", file); !dir.empty())
    return dir + "/" + file;
  return ShippedModelPath(file);
}

}  // namespace

std::string DemoModelPath(const std::string& anchor_dir) {
  if (auto env = FileFromEnv("SDGRAPH_DEMO_MODEL")) return *env;
  return InstalledModelPath(anchor_dir, kDemoModelFile);
}

std::string DemoInpaintModelPath(const std::string& anchor_dir) {
  if (auto env = FileFromEnv("SDGRAPH_DEMO_INPAINT_MODEL")) return *env;
  if (auto env = FileFromEnv("SDGRAPH_DEMO_MODEL")) return *env;
  return InstalledModelPath(anchor_dir, kDemoInpaintModelFile);
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

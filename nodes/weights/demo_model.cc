#include "nodes/weights/demo_model.h"

#include <cstdlib>

#include "absl/strings/numbers.h"
#include "nodes/base/file_util.h"

namespace sd {

std::string DemoModelPath() {
  if (const char* env = std::getenv("SDGRAPH_DEMO_MODEL"); env && *env)
    return IsReadableFile(env) ? env : "";
  const std::string installed = DirOfExecutable() + "/../share/sdgraph/models/" + kDemoModelFile;
  if (IsReadableFile(installed)) return installed;
  const std::string source = std::string(SD_SOURCE_MODELS_DIR) + "/" + kDemoModelFile;
  return IsReadableFile(source) ? source : "";
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

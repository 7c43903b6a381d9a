#include "nodes/base/install_dirs.h"

#include "nodes/base/file_util.h"

namespace sd {

std::vector<std::string> InstalledDataDirs(const std::string& anchor_dir, const std::string& what) {
  if (anchor_dir.empty()) return {};
  return {anchor_dir + "/../share/sdgraph/" + what, anchor_dir + "/../../share/sdgraph/" + what};
}

std::string FindInstalledDir(const std::string& anchor_dir, const std::string& what,
                             const std::string& probe) {
  for (const std::string& dir : InstalledDataDirs(anchor_dir, what)) {
    if (IsReadableFile(dir + "/" + probe)) return dir;
  }
  return "";
}

}  // namespace sd

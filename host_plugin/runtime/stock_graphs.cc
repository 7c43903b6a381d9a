#include "host_plugin/runtime/stock_graphs.h"

#include <cstdlib>
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

}  // namespace sd

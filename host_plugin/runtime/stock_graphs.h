// Where the stock graphs (graphs/*.pbtxt) are found, for every host: $SDGRAPH_GRAPHS, then the
// install tree next to the host binary or plugin (`<anchor>/../share/sdgraph/graphs`, or
// `../../share/...` from lib/gegl-0.4), then the
// source tree.
#pragma once

#include <string>

namespace sd {

// `anchor_dir`: the directory of the running binary or plugin ("" : not known).
std::string StockGraphPath(const std::string& name, const std::string& anchor_dir);

}  // namespace sd

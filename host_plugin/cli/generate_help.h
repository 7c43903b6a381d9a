// The --help texts of sd-graph run, txt2img, img2img and inpaint.
#pragma once

#include <string>

#include "host_plugin/cli/generate_util.h"

namespace sd::cli {

std::string GenerateHelp(Mode mode);

}  // namespace sd::cli

// The arguments of `sd-graph convert`, parsed without LibTorch: the light sd-graph front checks a
// file before it starts the engine that converts it.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "nodes/weights/tensor_view.h"

namespace sd::cli {

struct ConvertArgs {
  std::string in, out;
  std::optional<DType> dtype;  // none: keep each tensor's dtype
  bool int8 = false;  // --dtype q8: the UNet's 3x3 convolution weights in int8, the rest kept
};

// nullopt with `*exit_code` set when the command should not run (--help: 0, bad usage: 2).
std::optional<ConvertArgs> ParseConvertArgs(const std::vector<std::string>& argv, int* exit_code);

}  // namespace sd::cli

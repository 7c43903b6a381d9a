// The graph inputs a generating command sets from its flags: the shortcut flags (--prompt,
// --steps, --sampler, ...), the init image and mask, the ControlNet hints, then --set (which wins),
// and the image size (the model's native size unless given, checked for SD v1.x).
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "host_plugin/cli/generate_invocation.h"
#include "host_plugin/runtime/graph.h"

namespace sd::cli {

struct GraphInputs {
  std::map<std::string, Value> values;
  int64_t seed = 0, batch = 1;
  bool seed_given = false;
};

// Fills *in for `graph`. kExitOk, or the exit code after saying what is wrong.
int SetGraphInputs(const Invocation& inv, const Graph& graph, GraphInputs* in);

// Width and height not given become `native` (the model's native size; 0: none declared), then
// both must be positive multiples of 64, also after --hires-scale. A workflow's own sizes stand
// (its nodes check them). kExitOk, or the exit code after saying why.
int SetImageSize(const Invocation& inv, const Graph& graph, int native, GraphInputs* in);

}  // namespace sd::cli

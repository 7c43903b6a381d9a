// A planned loop written out as a graph of its own, to run whole on one worker (Placement WORKER):
// every value the loop reads from outside it (its timesteps, its carries' first values, what its
// nodes read from the graph's inputs and top-level nodes) becomes a graph input "in0", "in1", ...;
// its carries' final values become the graph's outputs (the body values a run captures, captures
// there).
// Names keep their meaning: node "denoise/step" is "denoise~step" there ('/' is reserved for the
// names subgraphs make), and the host maps progress and messages back.
//
//   SD_ASSIGN_OR_RETURN(LoopFragment f, MakeLoopFragment(plan.loops[0], plan, {}));
//   // f.config: input { name: "in0" ... } loop { name: "denoise~loop" ... } output { ... }
//   // f.inputs: {"in0", "schedule.timesteps"}, ...; f.outputs: {"carry0", "denoise/loop.latents"}
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "host_plugin/runtime/graph_plan.h"
#include "proto/sd/v1/graph.pb.h"

namespace sd {

struct LoopFragment {
  v1::GraphConfig config;
  std::vector<std::pair<std::string, std::string>> inputs;  // graph input -> outer source
  // Graph outputs and captures (sources there, RunOptions::capture) -> the sources they set here.
  std::vector<std::pair<std::string, std::string>> outputs;
  std::vector<std::string> captures;                 // the captures there
  std::map<std::string, v1::PortType> output_types;  // of the outputs and captures, by name there
  std::map<std::string, std::string> names;          // node name there -> name here
};

// `captured`: flat sources of the loop's body nodes ("NODE.PORT") to return as well (their last
// step's values: captured there, as a graph output can't read inside a loop).
// INVALID_ARGUMENT when a captured source is not the body's, or a source has no type in the plan.
absl::StatusOr<LoopFragment> MakeLoopFragment(const PlannedLoop& pl, const GraphPlan& plan,
                                              const std::vector<std::string>& captured);

// "denoise/step" -> "denoise~step".
std::string FragmentName(const std::string& name);

// `message` (from the worker) with the nodes and the loop it names in quotes ('denoise~step')
// named as here ('denoise/step').
std::string WithHostNames(const LoopFragment& f, std::string message);

}  // namespace sd

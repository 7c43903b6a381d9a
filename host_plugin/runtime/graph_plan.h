// Parsing and planning a graph file, before anything runs: the text is parsed, every node's kind
// and ports are checked against the kind's contract, edges are typed, top-level nodes and loops are
// ordered by their dependencies (a cycle outside a loop is an error) and given levels (equal levels
// are independent). Every error names the file, the line, the node and the port. Torch-free: it is
// what the graph fuzzer runs.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "host_plugin/runtime/subgraphs.h"
#include "nodes/ops/node_contract.h"
#include "proto/sd/v1/graph.pb.h"

namespace sd {

// Loop-scoped sources: "@loop.index", "@loop.t" and "@loop.CARRY".
inline constexpr char kLoopScope[] = "@loop.";

struct PlannedNode {
  const v1::Node* node = nullptr;
  NodeContract contract;
  std::vector<std::pair<std::string, std::string>> inputs;  // port -> source key
  SourceLoc loc;                                            // where it was written
  int level =
      0;  // 1 + the highest level it depends on, within its scope: equal levels are independent
};

struct PlannedLoop {
  const v1::Loop* loop = nullptr;
  std::vector<PlannedNode> body;  // in execution order (by level)
  SourceLoc loc;
  int level = 0;
};

struct GraphPlan {
  std::vector<PlannedNode> nodes;
  std::vector<PlannedLoop> loops;
  std::vector<std::pair<bool, int>> order;    // (is_loop, index) in execution order
  std::map<std::string, v1::PortType> types;  // every source key -> its type
  // A subgraph node's outputs ("USER.OUTPUT") -> the flat sources they read (see subgraphs.h).
  std::map<std::string, std::string> aliases;
  // `source`, or the flat source it is an alias of.
  const std::string& Resolve(const std::string& source) const {
    auto it = aliases.find(source);
    return it == aliases.end() ? source : it->second;
  }
};

struct ParsedGraph {
  std::shared_ptr<const v1::GraphConfig> config;
  // Points into *config: keep both together.
  std::shared_ptr<const GraphPlan> plan;
};

// Parses graph text and its imports, flattens its subgraphs and plans it. `name` (the file's path)
// starts every error message; INVALID_ARGUMENT for any error in the file, NOT_FOUND for a missing
// import.
absl::StatusOr<ParsedGraph> ParseGraph(const std::string& text, const std::string& name,
                                       const ContractLookup& contracts,
                                       const GraphImports& imports = {});

}  // namespace sd

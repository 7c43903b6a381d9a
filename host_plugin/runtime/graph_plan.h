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
#include "nodes/ops/node_contract.h"
#include "proto/sd/v1/graph.pb.h"

namespace sd {

// Loop-scoped sources: "@loop.index", "@loop.t" and "@loop.CARRY".
inline constexpr char kLoopScope[] = "@loop.";

struct PlannedNode {
  const v1::Node* node = nullptr;
  NodeContract contract;
  std::vector<std::pair<std::string, std::string>> inputs;  // port -> source key
  int line = 0;
  int level =
      0;  // 1 + the highest level it depends on, within its scope: equal levels are independent
};

struct PlannedLoop {
  const v1::Loop* loop = nullptr;
  std::vector<PlannedNode> body;  // in execution order (by level)
  int line = 0;
  int level = 0;
};

struct GraphPlan {
  std::vector<PlannedNode> nodes;
  std::vector<PlannedLoop> loops;
  std::vector<std::pair<bool, int>> order;    // (is_loop, index) in execution order
  std::map<std::string, v1::PortType> types;  // every source key -> its type
};

// The contract of a node kind by name; NOT_FOUND (its message listing the known kinds) otherwise.
using ContractLookup = std::function<absl::StatusOr<NodeContract>(const std::string& kind)>;

struct ParsedGraph {
  std::shared_ptr<const v1::GraphConfig> config;
  // Points into *config: keep both together.
  std::shared_ptr<const GraphPlan> plan;
};

// Parses graph text and plans it. `name` (the file's path) starts every error message;
// INVALID_ARGUMENT for any error in the file.
absl::StatusOr<ParsedGraph> ParseGraph(const std::string& text, const std::string& name,
                                       const ContractLookup& contracts);

}  // namespace sd

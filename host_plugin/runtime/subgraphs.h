// Subgraphs and imports: a graph file may define subgraphs (`subgraph { name: "denoise" ... }`) and
// import files that define them (`import: "sd.pbtxt"`); a node whose kind is a subgraph's name
// stands for that subgraph's nodes and loops. ExpandSubgraphs reads the file and its imports and
// writes one flat graph (no subgraphs, no imports) that the planner checks like any other, with
// where every element was written, so each error names its own file and line and the chain of
// nodes that used the subgraph. Torch-free (the graph fuzzer runs it).
//
//   subgraph {
//     name: "guided_eps"
//     input { name: "latents" type { kind: TENSOR dtype: FLOAT32 rank: 4 } }
//     ...
//     node { kind: "UNetStep" name: "cond" input: "latents=@latents" ... }
//     output { name: "eps" source: "cfg.eps" }
//   }
//   loop { ... node { kind: "guided_eps" name: "eps" input: "latents=@loop.latents" ... } }
//
// The flat names of a subgraph's nodes are "USER/NODE" (USER: the using node's flat name); the
// using node's outputs "USER.OUTPUT" are aliases of the sources they name. An input may be a
// literal, "PORT=#VALUE" (#2, #0.5, #text; not a tensor): it becomes a graph input "NODE/PORT"
// whose default is the literal, so it can still be set from outside.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nodes/ops/node_contract.h"
#include "proto/sd/v1/graph.pb.h"

namespace sd {

// The contract of a node kind by name; NOT_FOUND (its message listing the known kinds) otherwise.
using ContractLookup = std::function<absl::StatusOr<NodeContract>(const std::string& kind)>;

// Where an element of the flat graph was written.
struct SourceLoc {
  std::string file;
  int line = 0;     // 1-based; 0: unknown
  std::string via;  // for a subgraph's elements: "in subgraph 'S' used by node 'N' (FILE:LINE)"
};

// Where imported files come from.
struct GraphImports {
  // Reads a file: NOT_FOUND when there is none. Unset: no file can be imported (a graph text
  // without imports still expands).
  std::function<absl::StatusOr<std::string>(const std::string& path)> read;
  // Folders searched, in order, after the importing file's own folder.
  std::vector<std::string> library;
};

// A subgraph input's declared type, to be checked against the source wired to it.
struct DeclaredType {
  std::string source;  // flat
  v1::PortType type;
  SourceLoc loc;
  std::string where;  // "node 'd' input 'cfg'"
};

struct ExpandedGraph {
  std::shared_ptr<v1::GraphConfig> config;  // flat
  std::vector<SourceLoc> inputs, nodes, loops, outputs;
  std::vector<std::vector<SourceLoc>> loop_nodes;  // [loop][node]
  std::map<std::string, std::string> aliases;      // "USER.OUTPUT" -> the flat source it reads
  std::vector<DeclaredType> declared;
};

// At most this many nodes after expansion, this deep a chain of subgraphs, this many files.
inline constexpr int kMaxExpandedNodes = 20000;
inline constexpr int kMaxSubgraphDepth = 32;
inline constexpr int kMaxImportedFiles = 64;

// Parses `text` (named `file` in messages; its folder is where relative imports start) and its
// imports, flattens every use of a subgraph and turns literal inputs ("PORT=#VALUE", typed by the
// port) into graph inputs of their own ("NODE/PORT", the literal its default). `contracts` knows
// the registered kinds (a subgraph may not take a kind's name) and their port types.
// INVALID_ARGUMENT for errors in a file, NOT_FOUND for a missing import; every message starts
// "graph FILE:LINE:".
absl::StatusOr<ExpandedGraph> ExpandSubgraphs(const std::string& text, const std::string& file,
                                              const ContractLookup& contracts,
                                              const GraphImports& imports);

// "FILE:LINE" (or "FILE").
std::string Where(const SourceLoc& loc);

// INVALID_ARGUMENT "graph FILE:LINE: WHERE: MSG (VIA)", the form of every graph error.
absl::Status GraphError(const SourceLoc& loc, const std::string& where, const std::string& msg);

}  // namespace sd

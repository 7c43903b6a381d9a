// Graphs: load a .pbtxt, validate it completely against the node contracts before any model loads, plan,
// and execute in-process. Every error names the graph file, the line, the node and the port at fault.
//
//   SD_ASSIGN_OR_RETURN(Graph g, Graph::Load("graphs/txt2img.pbtxt"));
//   RunContext ctx{.checkpoint = "sd15.safetensors", .models = std::make_shared<ModelCache>()};
//   SD_ASSIGN_OR_RETURN(auto outputs, g.Run({{"prompt", std::string("a cat")}}, ctx, options));
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "host_plugin/runtime/graph_plan.h"
#include "nodes/ops/node.h"
#include "proto/sd/v1/graph.pb.h"

namespace sd {

struct Progress {
  int step = 0;   // 1-based step of the loop that is running (0 outside loops)
  int steps = 0;  // the loop's step count
  std::string node;
  double elapsed_s = 0;
};

// A node call sent elsewhere: the distributed runtime's worker pool implements NodeDispatcher. Nodes are
// pure, so a dispatcher may retry a call on another worker.
struct NodeCall {
  const std::string& node;  // the node's name in the graph
  const std::string& kind;
  const google::protobuf::Any& options;
  const NodeContract& contract;
  const std::map<std::string, Value>& inputs;  // checked against the contract
  const std::string& checkpoint;               // RunContext::checkpoint
  int step = 0;                                // 1-based loop step, 0 outside loops
};

// A whole loop sent elsewhere (Placement WORKER), written as a graph of its own (loop_fragment.h).
struct GraphCall {
  const std::string& loop;                             // the loop's name, for messages
  const std::string& graph_text;                       // a GraphConfig in text format
  const std::map<std::string, Value>& inputs;          // by graph input name; unset ones absent
  const std::vector<std::string>& capture;             // RunOptions::capture there
  const std::map<std::string, v1::PortType>& outputs;  // of the outputs and captures, by name
  const std::string& checkpoint;                       // RunContext::checkpoint
  int steps = 0;                                       // the loop's step count
  const std::function<void(const Progress&)>& on_progress;  // node names as in graph_text
};

class NodeDispatcher {
 public:
  virtual ~NodeDispatcher() = default;
  // Whether nodes of this kind go through the dispatcher; the others run in-process.
  virtual bool Handles(const NodeContract& contract) const { return contract.needs_model; }
  // Runs one call; returns the outputs by port name. `cancelled` (may be null) is polled while waiting.
  virtual absl::StatusOr<NodeOutputs> Call(const NodeCall& call, const std::atomic<bool>* cancelled) = 0;
  // Whether RunGraph can take loops placed on one worker; when not, they run node by node.
  virtual bool RunsGraphs() const { return false; }
  // Runs a whole loop as one request; returns the graph's outputs by name.
  virtual absl::StatusOr<std::map<std::string, Value>> RunGraph(
      const GraphCall& call, const std::atomic<bool>* cancelled) {
    (void)call;
    (void)cancelled;
    return absl::UnimplementedError("this dispatcher runs nodes, not graphs");
  }
};

struct RunOptions {
  std::function<void(const Progress&)> on_progress;  // per run, never global
  // Extra values to capture, by source ("node.port"; inside a loop, the last step's value).
  std::vector<std::string> capture;
  // Checked before every node: when set, the run stops with CANCELLED.
  const std::atomic<bool>* cancelled = nullptr;
  // When set, nodes it handles run through it (kernels of those are not opened here), and independent
  // dispatched nodes (e.g. the cond and uncond UNet calls of a step) run at the same time.
  NodeDispatcher* dispatcher = nullptr;
  // One-shot runs (the command line's last image): each node's kernel is closed after its last use in this
  // run, and networks no kernel holds any more are dropped from the context's ModelCache. The run then needs
  // the memory of its largest stage (the UNet loop, or the VAE decode with its activations), not of every
  // network at once. Later runs load the dropped networks again.
  bool release_models = false;
  // At most this many dispatched calls of one level at once (CallPool); the rest wait their turn.
  int max_parallel_calls = 8;
  // With a dispatcher: where every loop runs, over what the graph says (see v1::Placement).
  v1::Placement placement = v1::PLACEMENT_UNSPECIFIED;
  // Whether CFG halves run as one batch (v1::CfgBatch), over what the graph says; AUTO: as it says.
  v1::CfgBatch cfg_batch = v1::CFG_BATCH_AUTO;
  // When set, sees each node's inputs before it runs; an error stops the run (a worker bounds the
  // graphs callers send it with this, as it bounds their node calls).
  std::function<absl::Status(const std::string& kind, const std::map<std::string, Value>& inputs)>
      check_inputs;
  // When set: called before any kernel opens with every model reference the run's nodes compute
  // with (the run's model, and those their `model` inputs name); an error stops the run. A front
  // end records their LoRAs' hashes here.
  std::function<absl::Status(const std::set<std::string>& models)> on_models;
};

// Imports from files: beside the importing file, then in the graph library (GraphLibraryDirs of
// this executable); each a regular file of at most 16 MiB.
GraphImports FileImports();

class Graph {
 public:
  // Parses and validates. `name` is used in messages (the file's path for Load).
  static absl::StatusOr<Graph> Load(const std::string& path);
  static absl::StatusOr<Graph> FromText(const std::string& text, const std::string& name);
  // With the kinds `contracts` allows and the imports `imports` can read (none by default): what a
  // worker runs for a caller.
  static absl::StatusOr<Graph> FromText(const std::string& text, const std::string& name,
                                        const ContractLookup& contracts,
                                        const GraphImports& imports = {});

  const v1::GraphConfig& config() const { return *config_; }
  const std::string& name() const { return name_; }
  // The declared input, or nullptr.
  const v1::GraphInput* Input(const std::string& name) const;

  // Parses a command-line value for input `name` ("42", "0.5", "text", or "@file.safetensors:key" for
  // tensors).
  absl::StatusOr<Value> ParseInputValue(const std::string& name, const std::string& text) const;

  // Runs the graph. Inputs not given take their defaults; a required one missing is INVALID_ARGUMENT.
  // Returns the graph outputs by name, plus the captured sources.
  absl::StatusOr<std::map<std::string, Value>> Run(const std::map<std::string, Value>& inputs, RunContext& ctx,
                                                   const RunOptions& options = {}) const;

  // The plan points into the config: a copy's plan would point into the original's. The config
  // lives on the heap, so a move keeps the plan's pointers valid.
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  Graph(Graph&&) = default;
  Graph& operator=(Graph&&) = default;

 private:
  Graph() = default;
  absl::StatusOr<std::map<std::string, Value>> BindInputs(
      const std::map<std::string, Value>& inputs, int native) const;
  std::string name_;
  std::shared_ptr<const v1::GraphConfig> config_;
  std::shared_ptr<const GraphPlan> plan_;
};

}  // namespace sd

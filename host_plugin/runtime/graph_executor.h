// Executes one run of a planned graph, after its inputs are bound: opens every kernel first (models
// load once, before anything runs), then runs the plan's top-level nodes level by level and its
// loops step by step. Nodes of one level are independent: those a NodeDispatcher handles run at the
// same time on a bounded CallPool (RunOptions::max_parallel_calls), local ones on the calling
// thread meanwhile; results are stored in the plan's order. Every value a node reads or writes is
// checked against its contract; every error names the node. Cancellation is checked before every
// node (and dispatchers poll it during their calls); with RunOptions::release_models each kernel is
// closed after its last use and networks nothing holds any more leave the ModelCache. A loop placed
// on a worker (v1::Placement WORKER) goes to the dispatcher whole, as a graph of its own
// (loop_fragment.h); its kernels are not opened here. Models are values: the nodes that make them
// (ApplyLora, ApplyVae) run first, and each node that computes with a model is opened, or its
// calls sent, with the one on its `model` input (ResolveModels).
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "host_plugin/runtime/call_pool.h"
#include "host_plugin/runtime/graph.h"

namespace sd {

class GraphExecutor {
 public:
  // `graph_name` starts messages; `config` and `plan` must outlive the executor.
  GraphExecutor(const std::string& graph_name, const v1::GraphConfig& config, const GraphPlan& plan,
                RunContext& ctx, const RunOptions& options);

  // `bound` holds every graph input as "@NAME" (a value, or none for an optional input not given).
  // Returns the graph's outputs by name, plus the captured sources.
  absl::StatusOr<std::map<std::string, Value>> Run(std::map<std::string, Value> bound);

 private:
  using Lookup = std::function<const Value*(const std::string&)>;
  using Wave = std::vector<const PlannedNode*>;

  bool Remote(const PlannedNode& p) const;
  // Before any kernel opens: runs the nodes that make models (ApplyLora: no model of their own, an
  // output `model`) and reads the `model` input of every node that computes with one; each such
  // node is then opened (or its calls sent) with its model. FAILED_PRECONDITION when a model
  // would only be known during the run.
  absl::Status ResolveModels();
  absl::StatusOr<std::string> ModelOf(const PlannedNode& p, const std::string& where) const;
  // The model reference a node computes with, in the run's naming.
  const std::string& NodeModel(const PlannedNode& p) const;
  absl::Status OpenKernel(const PlannedNode& p);
  absl::Status OpenKernels();
  absl::StatusOr<std::map<std::string, Value>> Gather(const PlannedNode& p,
                                                      const Lookup& lookup) const;
  absl::StatusOr<NodeOutputs> Execute(const PlannedNode& p, const std::map<std::string, Value>& in,
                                      int step);
  // Two UNetStep calls of one wave as one batch (cfg_batch.h); the outputs of each.
  std::pair<absl::StatusOr<NodeOutputs>, absl::StatusOr<NodeOutputs>> ExecuteJoined(
      const PlannedNode& a, const std::map<std::string, Value>& in_a, const PlannedNode& b,
      const std::map<std::string, Value>& in_b, int step);
  bool JoinsCfgHalves() const;
  absl::Status Finish(const PlannedNode& p, const std::map<std::string, Value>& in,
                      absl::StatusOr<NodeOutputs> out, int step, int steps);
  absl::Status RunWave(const Wave& wave, const Lookup& lookup, int step, int steps);
  absl::Status RunLevels(const Wave& nodes, const Lookup& lookup, int step, int steps);
  absl::Status RunLoop(const PlannedLoop& pl);
  // Placement WORKER with a dispatcher that runs graphs.
  bool OnWorker(const PlannedLoop& pl) const;
  absl::Status RunLoopOnWorker(const PlannedLoop& pl, int steps);
  void Release(const Wave& done);
  const Value* Outer(const std::string& source) const;
  double Elapsed() const;

  const std::string& name_;
  const v1::GraphConfig& config_;
  const GraphPlan& plan_;
  RunContext& ctx_;
  const RunOptions& options_;
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::map<std::string, Value> values_;
  std::map<std::string, std::unique_ptr<NodeKernel>> kernels_;
  std::map<std::string, std::string> node_models_;  // node -> its `model` input, when wired
  std::map<std::string, RunContext> node_ctx_;      // node -> the context it is opened with
  std::optional<CallPool> pool_;  // made when a wave first has two dispatched calls
};

// "node 'NAME' (KIND)", as messages name nodes.
std::string NodeWho(const PlannedNode& p);

}  // namespace sd

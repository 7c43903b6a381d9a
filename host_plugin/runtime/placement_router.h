// Node calls to one dispatcher and whole loops (Placement WORKER) to another: with
// `sd-graph --workers CPU_POOL --loop-workers GPU_POOL` each denoising loop is one request to the
// GPU pool while the CPU pool takes everything else (CLIP, VAE, and loops placed NODES).
#pragma once

#include "host_plugin/runtime/graph.h"

namespace sd {

class PlacementRouter : public NodeDispatcher {
 public:
  PlacementRouter(NodeDispatcher& nodes, NodeDispatcher& loops) : nodes_(nodes), loops_(loops) {}
  bool Handles(const NodeContract& contract) const override { return nodes_.Handles(contract); }
  absl::StatusOr<NodeOutputs> Call(const NodeCall& call,
                                   const std::atomic<bool>* cancelled) override {
    return nodes_.Call(call, cancelled);
  }
  bool RunsGraphs() const override { return loops_.RunsGraphs(); }
  absl::StatusOr<std::map<std::string, Value>> RunGraph(
      const GraphCall& call, const std::atomic<bool>* cancelled) override {
    return loops_.RunGraph(call, cancelled);
  }

 private:
  NodeDispatcher& nodes_;
  NodeDispatcher& loops_;
};

}  // namespace sd

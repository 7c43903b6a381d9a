// Classifier-free guidance as one batch (v1::CfgBatch): the cond and uncond UNetStep calls of a
// wave joined into one batch-2 evaluation, which fills a GPU far better than two batch-1 calls
// (and, on a CPU, runs larger matrix products). The executor finds the pairs, joins their inputs,
// runs the first node's kernel once, and splits the outputs back, so each node still reports its
// own outputs, progress and errors.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "host_plugin/runtime/graph_plan.h"
#include "nodes/ops/node.h"

namespace sd {

// The setting in force: the run's (RunOptions::cfg_batch) unless AUTO, else the graph's.
v1::CfgBatch CfgBatchSetting(v1::CfgBatch run, v1::CfgBatch graph);
// Whether calls are joined under `setting` when the UNet runs on `device` (AUTO: on CUDA only).
bool JoinsCfgHalves(v1::CfgBatch setting, const torch::Device& device);

// Pairs (first, second) of indices into `wave` whose calls can be joined: two UNetStep nodes for
// which `local` holds, every input but `context` read from the same source, no `control` input
// set, and contexts of equal length and width. Each node is in at most one pair; `inputs[i]` are
// node i's gathered inputs.
std::vector<std::pair<size_t, size_t>> FindCfgPairs(
    const std::vector<const PlannedNode*>& wave,
    const std::vector<std::map<std::string, Value>>& inputs,
    const std::function<bool(const PlannedNode&)>& local);

// The inputs of one joined call: `first`'s, with the latents (and batch-B inpainting inputs) twice
// and the two contexts, each expanded to the latents' batch, stacked: first's, then second's.
std::map<std::string, Value> JoinCfgInputs(const std::map<std::string, Value>& first,
                                           const std::map<std::string, Value>& second);

// A joined call's outputs, split along the batch axis into the first call's and the second's (the
// latents' batch of `first`, the first call's inputs, each). INTERNAL when an output is not a
// tensor of twice that batch.
absl::StatusOr<std::pair<NodeOutputs, NodeOutputs>> SplitCfgOutputs(
    const NodeOutputs& joined, const std::map<std::string, Value>& first);

}  // namespace sd

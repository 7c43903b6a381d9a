// Core::RunGraph: a caller's graph (a loop placed on this worker) run here with this worker's
// models. The graph is untrusted like any request: parsed without imports, its kinds those served
// here or needing no model, its inputs checked against the limits and their declared types, and
// every node's inputs checked as a node call's are before it runs.
#include <google/protobuf/text_format.h>

#include "absl/strings/str_cat.h"
#include "host_plugin/runtime/graph.h"
#include "nodes/base/status_macros.h"
#include "nodes/ops/model_cache.h"
#include "nodes/tensor/wire_messages.h"
#include "worker/core.h"
#include "worker/request_limits.h"

namespace sd::worker {
namespace {

// Whether any node of `g` computes with a model.
bool NeedsModel(const v1::GraphConfig& g) {
  auto needs = [](const v1::Node& n) {
    auto kind = NodeRegistry::Get().Find(n.kind());
    return kind.ok() && (*kind)->contract().needs_model;
  };
  for (const v1::Node& n : g.node()) {
    if (needs(n)) return true;
  }
  for (const v1::Loop& l : g.loop()) {
    for (const v1::Node& n : l.node()) {
      if (needs(n)) return true;
    }
  }
  return false;
}

}  // namespace

absl::StatusOr<Core::ValueMap> Core::DecodeGraphInputs(const v1::RunGraphRequest& req,
                                                       const Graph& graph) const {
  if (req.raw_input_contents_size() != req.inputs_size()) {
    return absl::InvalidArgumentError(absl::StrCat(req.inputs_size(), " inputs but ",
                                                   req.raw_input_contents_size(),
                                                   " raw_input_contents: give one per input"));
  }
  ValueMap values;
  for (int i = 0; i < req.inputs_size(); ++i) {
    const auto& t = req.inputs(i);
    const v1::GraphInput* in = graph.Input(t.name());
    const std::string what = absl::StrCat("graph input '", t.name().substr(0, 100), "'");
    if (!in) return absl::InvalidArgumentError(absl::StrCat(what, ": the graph has none"));
    if (values.count(t.name()))
      return absl::InvalidArgumentError(absl::StrCat(what, " is given twice"));
    SD_ASSIGN_OR_RETURN(values[t.name()],
                        DecodeChecked(t, req.raw_input_contents(i), in->type(), what));
  }
  // The loops' step counts, where the caller gives their timesteps.
  for (const v1::Loop& l : graph.config().loop()) {
    auto it = values.find(l.timesteps().substr(1));
    if (l.timesteps().rfind('@', 0) != 0 || it == values.end()) continue;
    const auto* t = std::get_if<torch::Tensor>(&it->second);
    if (t && t->numel() > options_.limits.max_loop_steps) {
      return absl::InvalidArgumentError(
          absl::StrCat("loop '", l.name().substr(0, 100), "': ", t->numel(),
                       " steps exceeds this worker's limit of ", options_.limits.max_loop_steps));
    }
  }
  return values;
}

absl::Status Core::RunGraph(const v1::RunGraphRequest& req,
                            const std::function<void(const v1::RunGraphEvent&)>& emit,
                            const std::atomic<bool>* cancelled, v1::RunGraphEvent* result) {
  auto contracts = [this](const std::string& kind) -> absl::StatusOr<NodeContract> {
    SD_ASSIGN_OR_RETURN(NodeContract c, RegisteredContract(kind));
    if (c.needs_model) SD_RETURN_IF_ERROR(ServedKind(kind).status());
    return c;
  };
  const std::string name = req.id().empty() ? "from the caller" : req.id().substr(0, 200);
  SD_ASSIGN_OR_RETURN(Graph graph, Graph::FromText(req.graph(), name, contracts));
  WireDType wire = WireDType::kF32;
  if (!req.wire_dtype().empty()) {
    SD_ASSIGN_OR_RETURN(wire, ParseWireDType(req.wire_dtype()));
  }
  RunContext ctx = base_;
  ctx.checkpoint.clear();
  const bool needs_model = NeedsModel(graph.config());
  if (!req.checkpoint().empty()) {
    SD_ASSIGN_OR_RETURN(ctx.checkpoint, ResolveRef(req.checkpoint()));
    if (!req.sha256().empty())
      SD_RETURN_IF_ERROR(CheckModelHash(req.checkpoint(), ctx.checkpoint, req.sha256()));
  } else if (needs_model) {
    return absl::InvalidArgumentError(
        "the graph computes with a model: name one (`checkpoint`) in the worker's repository");
  }
  SD_ASSIGN_OR_RETURN(ValueMap inputs, DecodeGraphInputs(req, graph));
  RunOptions options;
  options.cancelled = cancelled;
  options.capture.assign(req.capture().begin(), req.capture().end());
  options.on_progress = [&](const Progress& p) {
    v1::RunGraphEvent e;
    e.set_step(p.step);
    e.set_steps(p.steps);
    e.set_node(p.node);
    e.set_elapsed_s(p.elapsed_s);
    emit(e);
  };
  options.check_inputs = [this](const std::string& kind, const ValueMap& in) {
    return CheckNodeInputs(kind, in, options_.limits);
  };
  absl::StatusOr<ValueMap> out = graph.Run(inputs, ctx, options);
  if (needs_model) UpdateModelGauges();
  if (!out.ok()) return out.status();
  std::vector<std::string> names = options.capture;
  for (const v1::GraphOutput& o : graph.config().output()) names.push_back(o.name());
  for (const std::string& name : names) {
    SD_RETURN_IF_ERROR(AddOutputTensor(name, out->at(name), wire, result));
  }
  result->set_done(true);
  if (needs_model) MarkServing();
  return absl::OkStatus();
}

}  // namespace sd::worker

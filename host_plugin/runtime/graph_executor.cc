#include "host_plugin/runtime/graph_executor.h"

#include <google/protobuf/text_format.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "host_plugin/runtime/cfg_batch.h"
#include "host_plugin/runtime/loop_fragment.h"
#include "nodes/base/exception_status.h"
#include "nodes/base/status_macros.h"
#include "nodes/ops/model_cache.h"

namespace sd {

std::string NodeWho(const PlannedNode& p) {
  return absl::StrCat("node '", p.node->name(), "' (", p.node->kind(), ")");
}

GraphExecutor::GraphExecutor(const std::string& graph_name, const v1::GraphConfig& config,
                             const GraphPlan& plan, RunContext& ctx, const RunOptions& options)
    : name_(graph_name), config_(config), plan_(plan), ctx_(ctx), options_(options) {}

double GraphExecutor::Elapsed() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

bool GraphExecutor::Remote(const PlannedNode& p) const {
  return options_.dispatcher && options_.dispatcher->Handles(p.contract);
}

const Value* GraphExecutor::Outer(const std::string& source) const {
  auto it = values_.find(source);
  return it == values_.end() ? nullptr : &it->second;
}

namespace {

bool MakesModel(const PlannedNode& p) {
  return !p.contract.needs_model && p.contract.Output(kModelInput.name()) != nullptr;
}

// Where a node's `model` input comes from; nullptr when it is not wired.
const std::string* ModelSource(const PlannedNode& p) {
  for (const auto& [port, src] : p.inputs) {
    if (port == kModelInput.name()) return &src;
  }
  return nullptr;
}

}  // namespace

absl::StatusOr<std::string> GraphExecutor::ModelOf(const PlannedNode& p,
                                                   const std::string& where) const {
  const std::string& src = *ModelSource(p);
  const Value* v = src.rfind(kLoopScope, 0) == 0 ? nullptr : Outer(src);
  if (!v) {
    return absl::FailedPreconditionError(absl::StrCat(
        NodeWho(p), " input '", kModelInput.name(), "': '", src, "' is computed ", where,
        "; a model must be known before the run starts (wire a graph input, a value or a "
        "chain of ApplyLora and ApplyVae nodes on those)"));
  }
  if (std::holds_alternative<std::monostate>(*v)) return ctx_.checkpoint;  // an unset input
  return std::get<std::string>(*v);  // the plan checked the port's type
}

absl::Status GraphExecutor::ResolveModels() {
  for (const PlannedNode& p : plan_.nodes) {
    if (!MakesModel(p)) continue;
    for (const auto& [port, src] : p.inputs) {
      if (!Outer(src)) {
        return absl::FailedPreconditionError(absl::StrCat(
            NodeWho(p), " input '", port, "': '", src,
            "' is computed during the run; a model must be known before the run starts (wire "
            "graph inputs or values)"));
      }
    }
    SD_RETURN_IF_ERROR(OpenKernel(p));
    SD_ASSIGN_OR_RETURN(auto in, Gather(p, [this](const std::string& s) { return Outer(s); }));
    SD_RETURN_IF_ERROR(Finish(p, in, Execute(p, in, 0), 0, 0));
  }
  auto read = [&](const PlannedNode& p, const char* where) -> absl::Status {
    if (!p.contract.needs_model || !ModelSource(p)) return absl::OkStatus();
    SD_ASSIGN_OR_RETURN(std::string ref, ModelOf(p, where));
    RunContext ctx = ctx_;
    ctx.checkpoint = ref;
    if (ctx_.model_file && !Remote(p)) {
      absl::StatusOr<std::string> file = ctx_.model_file(ref);
      if (!file.ok())
        return absl::Status(file.status().code(),
                            absl::StrCat(NodeWho(p), ": ", file.status().message()));
      ctx.checkpoint = *file;
    }
    node_models_[p.node->name()] = std::move(ref);
    node_ctx_.emplace(p.node->name(), std::move(ctx));
    return absl::OkStatus();
  };
  std::set<std::string> models;
  for (const PlannedNode& p : plan_.nodes) {
    SD_RETURN_IF_ERROR(read(p, "during the run"));
    if (p.contract.needs_model) models.insert(NodeModel(p));
  }
  for (const PlannedLoop& l : plan_.loops) {
    for (const PlannedNode& p : l.body) {
      SD_RETURN_IF_ERROR(read(p, "inside the loop"));
      if (p.contract.needs_model) models.insert(NodeModel(p));
    }
  }
  return options_.on_models ? options_.on_models(models) : absl::OkStatus();
}

const std::string& GraphExecutor::NodeModel(const PlannedNode& p) const {
  auto it = node_models_.find(p.node->name());
  return it == node_models_.end() ? ctx_.checkpoint : it->second;
}

absl::Status GraphExecutor::OpenKernel(const PlannedNode& p) {
  if (Remote(p) || kernels_.count(p.node->name())) return absl::OkStatus();
  SD_ASSIGN_OR_RETURN(const NodeKind* kind, NodeRegistry::Get().Find(p.node->kind()));
  std::unique_ptr<NodeKernel> k = kind->create(p.node->options());
  auto own = node_ctx_.find(p.node->name());
  RunContext& ctx = own == node_ctx_.end() ? ctx_ : own->second;
  absl::Status s = CatchExceptions("", [&] { return k->Open(ctx); });
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat(NodeWho(p), ": ", s.message()));
  kernels_[p.node->name()] = std::move(k);
  return absl::OkStatus();
}

// Every kernel before anything runs: models load here, once.
absl::Status GraphExecutor::OpenKernels() {
  for (const PlannedNode& p : plan_.nodes) SD_RETURN_IF_ERROR(OpenKernel(p));
  for (const PlannedLoop& l : plan_.loops) {
    if (OnWorker(l)) continue;
    for (const PlannedNode& p : l.body) SD_RETURN_IF_ERROR(OpenKernel(p));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::map<std::string, Value>> GraphExecutor::Gather(const PlannedNode& p,
                                                                   const Lookup& lookup) const {
  if (options_.cancelled && options_.cancelled->load()) {
    return absl::CancelledError(
        absl::StrCat("graph ", name_, ": run cancelled before ", NodeWho(p)));
  }
  std::map<std::string, Value> in;
  for (const auto& [port, src] : p.inputs) {
    const Value* v = lookup(src);
    if (!v || std::holds_alternative<std::monostate>(*v)) {
      if (p.contract.Input(port)->optional) continue;
      return absl::InvalidArgumentError(
          absl::StrCat(NodeWho(p), " input '", port, "': '", src, "' has no value"));
    }
    in[port] = *v;
  }
  // Types and sizes (the ports' dims), before anything is sent anywhere.
  if (absl::Status s = CheckCallInputs(p.contract, in); !s.ok())
    return absl::Status(s.code(), absl::StrCat(NodeWho(p), " ", s.message()));
  if (options_.check_inputs) {
    if (absl::Status s = options_.check_inputs(p.node->kind(), in); !s.ok())
      return absl::Status(s.code(), absl::StrCat(NodeWho(p), ": ", s.message()));
  }
  return in;
}

// Runs on pool threads too: nothing may throw out of here.
absl::StatusOr<NodeOutputs> GraphExecutor::Execute(const PlannedNode& p,
                                                   const std::map<std::string, Value>& in,
                                                   int step) {
  return CatchExceptions("", [&]() -> absl::StatusOr<NodeOutputs> {
    if (Remote(p)) {
      NodeCall call{
          p.node->name(), p.node->kind(), p.node->options(), p.contract, in, NodeModel(p), step};
      return options_.dispatcher->Call(call, options_.cancelled);
    }
    NodeOutputs out;
    c10::InferenceMode guard;
    SD_ASSIGN_OR_RETURN(const NodeInputs checked,
                        NodeInputs::Check(p.contract, &in, &p.node->name()));
    SD_RETURN_IF_ERROR(kernels_.at(p.node->name())->Process(checked, out));
    return out;
  });
}

bool GraphExecutor::JoinsCfgHalves() const {
  return sd::JoinsCfgHalves(CfgBatchSetting(options_.cfg_batch, config_.cfg_batch()), ctx_.device);
}

std::pair<absl::StatusOr<NodeOutputs>, absl::StatusOr<NodeOutputs>> GraphExecutor::ExecuteJoined(
    const PlannedNode& a, const std::map<std::string, Value>& in_a, const PlannedNode& b,
    const std::map<std::string, Value>& in_b, int step) {
  absl::StatusOr<std::pair<NodeOutputs, NodeOutputs>> halves =
      CatchExceptions("", [&]() -> absl::StatusOr<std::pair<NodeOutputs, NodeOutputs>> {
        SD_ASSIGN_OR_RETURN(NodeOutputs joined, Execute(a, JoinCfgInputs(in_a, in_b), step));
        return SplitCfgOutputs(joined, in_a);
      });
  if (halves.ok()) return {std::move(halves->first), std::move(halves->second)};
  auto with = [&](const PlannedNode& other) {
    return absl::Status(
        halves.status().code(),
        absl::StrCat(halves.status().message(), " (run as one batch with ", NodeWho(other), ")"));
  };
  return {with(b), with(a)};
}

absl::Status GraphExecutor::Finish(const PlannedNode& p, const std::map<std::string, Value>& in,
                                   absl::StatusOr<NodeOutputs> out, int step, int steps) {
  const std::string who = NodeWho(p);
  if (!out.ok())
    return absl::Status(out.status().code(), absl::StrCat(who, ": ", out.status().message()));
  // Whatever computed them, in-process or a worker: each output of its type and of a size that fits
  // the inputs (a wrong-sized VAE or CLIP answer is caught here, naming this node).
  if (absl::Status s = CheckCallOutputs(p.contract, in, *out); !s.ok())
    return absl::Status(s.code(), absl::StrCat(who, " ", s.message()));
  for (const PortSpec& o : p.contract.outputs) {
    values_[p.node->name() + "." + o.name] = std::move(out->at(o.name));
  }
  if (options_.on_progress) options_.on_progress({step, steps, p.node->name(), Elapsed()});
  return absl::OkStatus();
}

// One level's nodes: dispatched ones at the same time on the pool (when there are two or more),
// local ones meanwhile on this thread; results are stored in the plan's order, so the first error
// in that order is the one reported.
absl::Status GraphExecutor::RunWave(const Wave& wave, const Lookup& lookup, int step, int steps) {
  std::vector<std::map<std::string, Value>> ins(wave.size());
  for (size_t i = 0; i < wave.size(); ++i) {
    SD_ASSIGN_OR_RETURN(ins[i], Gather(*wave[i], lookup));
  }
  std::vector<std::optional<absl::StatusOr<NodeOutputs>>> outs(wave.size());
  size_t dispatched = 0;
  for (const PlannedNode* p : wave) dispatched += Remote(*p) ? 1 : 0;
  const bool overlap = dispatched > 1;
  std::vector<std::function<void()>> calls;
  for (size_t i = 0; i < wave.size(); ++i) {
    if (overlap && Remote(*wave[i]))
      calls.push_back([&, i] { outs[i] = Execute(*wave[i], ins[i], step); });
  }
  // CFG halves this process runs, as one batch (v1::CfgBatch).
  std::vector<std::pair<size_t, size_t>> joined;
  if (JoinsCfgHalves()) {
    joined = FindCfgPairs(wave, ins, [&](const PlannedNode& p) { return !Remote(p); });
  }
  auto local = [&] {
    for (const auto& [a, b] : joined) {
      auto [out_a, out_b] = ExecuteJoined(*wave[a], ins[a], *wave[b], ins[b], step);
      outs[a] = std::move(out_a);
      outs[b] = std::move(out_b);
    }
    for (size_t i = 0; i < wave.size(); ++i) {
      if (!outs[i] && !(overlap && Remote(*wave[i]))) outs[i] = Execute(*wave[i], ins[i], step);
    }
  };
  if (calls.empty()) {
    local();
  } else {
    if (!pool_) pool_.emplace(options_.max_parallel_calls);
    pool_->RunAll(std::move(calls), local);
  }
  for (size_t i = 0; i < wave.size(); ++i)
    SD_RETURN_IF_ERROR(Finish(*wave[i], ins[i], std::move(*outs[i]), step, steps));
  return absl::OkStatus();
}

// RunOptions::release_models: closes the kernels of nodes that will not run again in this run and
// drops the networks nothing holds any more.
void GraphExecutor::Release(const Wave& done) {
  if (!options_.release_models) return;
  bool closed = false;
  for (const PlannedNode* p : done) closed = kernels_.erase(p->node->name()) > 0 || closed;
  if (closed && ctx_.models) ctx_.models->DropUnreferenced();
}

absl::Status GraphExecutor::RunLevels(const Wave& nodes, const Lookup& lookup, int step,
                                      int steps) {
  for (size_t i = 0; i < nodes.size();) {
    size_t j = i;
    Wave wave;
    for (; j < nodes.size() && nodes[j]->level == nodes[i]->level; ++j) {
      // Top-level model-making nodes ran in ResolveModels.
      if (step != 0 || !MakesModel(*nodes[j])) wave.push_back(nodes[j]);
    }
    if (!wave.empty()) SD_RETURN_IF_ERROR(RunWave(wave, lookup, step, steps));
    if (step == 0) Release(wave);  // top-level nodes run once
    i = j;
  }
  return absl::OkStatus();
}

absl::Status GraphExecutor::RunLoop(const PlannedLoop& pl) {
  const Value* tsv = Outer(pl.loop->timesteps());
  if (!tsv || !std::holds_alternative<torch::Tensor>(*tsv))
    return absl::InvalidArgumentError(absl::StrCat("loop '", pl.loop->name(), "': no timesteps"));
  const torch::Tensor ts = std::get<torch::Tensor>(*tsv).contiguous();
  const bool float_steps = ts.is_floating_point();
  std::map<std::string, Value> carries;
  for (const v1::Carry& c : pl.loop->carry()) {
    const Value* init = Outer(c.init());
    if (!init)
      return absl::InvalidArgumentError(absl::StrCat("loop '", pl.loop->name(), "' carry '",
                                                     c.name(), "': '", c.init(), "' has no value"));
    carries[c.name()] = *init;
  }
  const int steps = static_cast<int>(ts.numel());
  if (OnWorker(pl)) return RunLoopOnWorker(pl, steps);
  Wave body;
  for (const PlannedNode& p : pl.body) body.push_back(&p);
  for (int i = 0; i < steps; ++i) {
    const Value t = float_steps ? Value(ts[i].item<double>()) : Value(ts[i].item<int64_t>());
    const Value idx = static_cast<int64_t>(i);
    auto scoped = [&](const std::string& src) -> const Value* {
      if (src.rfind(kLoopScope, 0) != 0) return Outer(src);
      const std::string var = src.substr(std::strlen(kLoopScope));
      if (var == "t") return &t;
      if (var == "index") return &idx;
      auto it = carries.find(var);
      return it == carries.end() ? nullptr : &it->second;
    };
    SD_RETURN_IF_ERROR(RunLevels(body, scoped, i + 1, steps));
    for (const v1::Carry& c : pl.loop->carry()) carries[c.name()] = values_[c.next()];
  }
  for (auto& [name, v] : carries) values_[pl.loop->name() + "." + name] = std::move(v);
  Release(body);
  return absl::OkStatus();
}

bool GraphExecutor::OnWorker(const PlannedLoop& pl) const {
  if (!options_.dispatcher || !options_.dispatcher->RunsGraphs()) return false;
  v1::Placement placement = options_.placement;
  if (placement == v1::PLACEMENT_UNSPECIFIED) placement = pl.loop->placement();
  if (placement == v1::PLACEMENT_UNSPECIFIED) placement = config_.placement();
  return placement == v1::WORKER;
}

absl::Status GraphExecutor::RunLoopOnWorker(const PlannedLoop& pl, int steps) {
  const std::string who = absl::StrCat("loop '", pl.loop->name(), "'");
  std::vector<std::string> captured;  // what the run captures of the body's values
  for (const std::string& c : options_.capture) {
    const std::string& src = plan_.Resolve(c);
    for (const PlannedNode& p : pl.body) {
      if (src.rfind(p.node->name() + ".", 0) == 0 &&
          std::find(captured.begin(), captured.end(), src) == captured.end())
        captured.push_back(src);
    }
  }
  SD_ASSIGN_OR_RETURN(LoopFragment f, MakeLoopFragment(pl, plan_, captured));
  f.config.set_cfg_batch(
      CfgBatchSetting(options_.cfg_batch, config_.cfg_batch()));  // AUTO: as its device says
  std::map<std::string, Value> inputs;
  for (const auto& [name, src] : f.inputs) {
    const Value* v = Outer(src);
    if (!v) return absl::InvalidArgumentError(absl::StrCat(who, ": '", src, "' has no value"));
    if (!std::holds_alternative<std::monostate>(*v)) inputs[name] = *v;
  }
  std::string text;
  if (!google::protobuf::TextFormat::PrintToString(f.config, &text))
    return absl::InternalError(absl::StrCat(who, ": could not write it as a graph"));
  const std::function<void(const Progress&)> relay = [&](const Progress& p) {
    if (!options_.on_progress) return;
    auto name = f.names.find(p.node);
    options_.on_progress(
        {p.step, p.steps, name == f.names.end() ? p.node : name->second, Elapsed()});
  };
  // The worker loads the model the body's nodes compute with when they agree on one.
  std::set<std::string> models;
  for (const PlannedNode& p : pl.body) {
    if (p.contract.needs_model) models.insert(NodeModel(p));
  }
  const std::string& model = models.size() == 1 ? *models.begin() : ctx_.checkpoint;
  const GraphCall call{pl.loop->name(), text,  inputs, f.captures,
                       f.output_types,  model, steps,  relay};
  absl::StatusOr<std::map<std::string, Value>> out =
      CatchExceptions("", [&] { return options_.dispatcher->RunGraph(call, options_.cancelled); });
  if (!out.ok()) {
    return absl::Status(out.status().code(),
                        absl::StrCat(who, " (on a worker): ",
                                     WithHostNames(f, std::string(out.status().message()))));
  }
  for (const auto& [name, key] : f.outputs) {
    auto it = out->find(name);
    if (it == out->end())
      return absl::InternalError(absl::StrCat(who, ": the worker did not return '", key, "'"));
    if (absl::Status c = CheckValue(it->second, f.output_types.at(name)); !c.ok())
      return absl::InternalError(absl::StrCat(who, ": '", key, "' from the worker: ", c.message()));
    values_[key] = std::move(it->second);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::map<std::string, Value>> GraphExecutor::Run(
    std::map<std::string, Value> bound) {
  values_ = std::move(bound);
  SD_RETURN_IF_ERROR(ResolveModels());
  SD_RETURN_IF_ERROR(OpenKernels());
  for (const std::string& c : options_.capture) {
    if (!plan_.types.count(plan_.Resolve(c))) {
      return absl::InvalidArgumentError(absl::StrCat("graph ", name_, ": nothing named '", c,
                                                     "' to capture (NODE.PORT or LOOP.CARRY)"));
    }
  }
  const Lookup outer = [this](const std::string& src) { return Outer(src); };
  Wave pending;  // top-level nodes up to the next loop, run level by level
  for (const auto& [is_loop, index] : plan_.order) {
    if (!is_loop) {
      pending.push_back(&plan_.nodes[index]);
      continue;
    }
    SD_RETURN_IF_ERROR(RunLevels(pending, outer, 0, 0));
    pending.clear();
    SD_RETURN_IF_ERROR(RunLoop(plan_.loops[index]));
  }
  SD_RETURN_IF_ERROR(RunLevels(pending, outer, 0, 0));
  std::map<std::string, Value> result;
  for (const std::string& c : options_.capture)
    result[c] = values_[plan_.Resolve(c)];  // inside loops: the last step's value
  for (const v1::GraphOutput& o : config_.output()) result[o.name()] = values_[o.source()];
  return result;
}

}  // namespace sd

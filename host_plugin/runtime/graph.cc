#include "host_plugin/runtime/graph.h"

#include <torch/torch.h>

#include <chrono>
#include <optional>
#include <set>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "nodes/base/exception_status.h"
#include "nodes/base/file_util.h"
#include "nodes/base/status_macros.h"
#include "nodes/models/model_util.h"
#include "nodes/ops/model_cache.h"
#include "nodes/weights/demo_model.h"
#include "nodes/weights/safetensors.h"
#include "nodes/weights/torch_tensors.h"

namespace sd {

namespace {

absl::StatusOr<Value> FromProto(const v1::Value& v) {
  switch (v.kind_case()) {
    case v1::Value::kS:
      return Value(v.s());
    case v1::Value::kI:
      return Value(v.i());
    case v1::Value::kF:
      return Value(v.f());
    case v1::Value::kTensor: {
      const v1::Tensor& t = v.tensor();
      torch::ScalarType st;
      switch (t.dtype()) {
        case v1::FLOAT32:
          st = torch::kFloat32;
          break;
        case v1::FLOAT16:
          st = torch::kFloat16;
          break;
        case v1::BFLOAT16:
          st = torch::kBFloat16;
          break;
        case v1::INT64:
          st = torch::kInt64;
          break;
        case v1::UINT8:
          st = torch::kUInt8;
          break;
        default:
          return absl::InvalidArgumentError("tensor value without a dtype");
      }
      std::vector<int64_t> shape(t.shape().begin(), t.shape().end());
      SD_ASSIGN_OR_RETURN(uint64_t n, CheckedNumel(shape, "tensor value"));
      if (n * torch::elementSize(st) != t.raw().size()) {
        return absl::InvalidArgumentError(absl::StrCat("tensor value: ", t.raw().size(),
                                                       " bytes for shape ", ShapeString(shape)));
      }
      return Value(torch::from_blob(const_cast<char*>(t.raw().data()), shape, st).clone());
    }
    default:
      return Value();
  }
}

}  // namespace

absl::StatusOr<Graph> Graph::FromText(const std::string& text, const std::string& name) {
  // Referencing the stock kinds links them (and their options messages) into every host.
  static const size_t stock_kinds = StockNodeKinds().size();
  (void)stock_kinds;
  auto contracts = [](const std::string& kind) -> absl::StatusOr<NodeContract> {
    SD_ASSIGN_OR_RETURN(const NodeKind* k, NodeRegistry::Get().Find(kind));
    return k->contract();
  };
  SD_ASSIGN_OR_RETURN(ParsedGraph parsed, ParseGraph(text, name, contracts));
  Graph g;
  g.name_ = name;
  g.config_ = std::move(parsed.config);
  g.plan_ = std::move(parsed.plan);
  return g;
}

absl::StatusOr<Graph> Graph::Load(const std::string& path) {
  SD_ASSIGN_OR_RETURN(std::string text, ReadWholeFile(path, "graph"));
  return FromText(text, path);
}

const v1::GraphInput* Graph::Input(const std::string& name) const {
  for (const v1::GraphInput& in : config_->input()) {
    if (in.name() == name) return &in;
  }
  return nullptr;
}

absl::StatusOr<Value> Graph::ParseInputValue(const std::string& name,
                                             const std::string& text) const {
  const v1::GraphInput* in = Input(name);
  if (!in) {
    std::vector<std::string> names;
    for (const v1::GraphInput& i : config_->input()) names.push_back(i.name());
    return absl::InvalidArgumentError(absl::StrCat("graph ", name_, " has no input '", name,
                                                   "' (inputs: ", absl::StrJoin(names, ", "), ")"));
  }
  switch (in->type().kind()) {
    case v1::STRING:
      return Value(text);
    case v1::INT: {
      int64_t v;
      if (!absl::SimpleAtoi(text, &v))
        return absl::InvalidArgumentError(
            absl::StrCat("input '", name, "': '", text, "' is not an integer"));
      return Value(v);
    }
    case v1::FLOAT: {
      double v;
      if (!absl::SimpleAtod(text, &v))
        return absl::InvalidArgumentError(
            absl::StrCat("input '", name, "': '", text, "' is not a number"));
      return Value(v);
    }
    case v1::TENSOR: {
      // @file.safetensors:key
      const size_t colon = text.rfind(':');
      if (text.empty() || text[0] != '@' || colon == std::string::npos || colon < 2) {
        return absl::InvalidArgumentError(
            absl::StrCat("input '", name, "': a tensor is given as @FILE.safetensors:KEY"));
      }
      auto st = ReadSafetensors(text.substr(1, colon - 1));
      if (!st.ok()) return st.status();
      for (const TensorView& v : st->tensors) {
        if (v.name == text.substr(colon + 1)) return Value(ViewAsTorch(v, st->file).clone());
      }
      return absl::NotFoundError(absl::StrCat("input '", name, "': ", text.substr(1, colon - 1),
                                              " has no tensor '", text.substr(colon + 1), "'"));
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat("input '", name, "' has no type"));
  }
}

namespace {

// What an in-process run's checkpoint declares as its native size ("sdgraph.native_size"): graph
// inputs `width` and `height` that the run does not set take it instead of their defaults. 0 when
// it declares none, and for distributed runs (their hosts set the size the workers report).
int NativeSizeFor(const RunContext& ctx, const RunOptions& options) {
  if (options.dispatcher || !ctx.models || ctx.checkpoint.empty()) return 0;
  auto entry =
      ctx.models->Open(ctx.checkpoint);  // a failure is reported by the nodes that need the model
  return entry.ok() ? NativeSize((*entry)->checkpoint->metadata()).value_or(0) : 0;
}

}  // namespace

absl::StatusOr<std::map<std::string, Value>> Graph::Run(const std::map<std::string, Value>& inputs,
                                                        RunContext& ctx,
                                                        const RunOptions& options) const {
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  std::map<std::string, Value> values;
  for (const auto& [n, v] : inputs) {
    if (!Input(n))
      return absl::InvalidArgumentError(absl::StrCat("graph ", name_, " has no input '", n, "'"));
  }
  const int native = NativeSizeFor(ctx, options);
  for (const v1::GraphInput& in : config_->input()) {
    Value v;
    if (auto it = inputs.find(in.name()); it != inputs.end()) {
      v = it->second;
    } else if (native > 0 && in.type().kind() == v1::INT &&
               (in.name() == "width" || in.name() == "height")) {
      v = int64_t{native};
    } else if (in.has_default_value()) {
      SD_ASSIGN_OR_RETURN(v, FromProto(in.default_value()));
    } else if (!in.optional()) {
      return absl::InvalidArgumentError(absl::StrCat("graph ", name_, ": required input '",
                                                     in.name(), "' (", DescribeType(in.type()),
                                                     ") is not set"));
    }
    if (std::holds_alternative<int64_t>(v) && in.type().kind() == v1::FLOAT)
      v = static_cast<double>(std::get<int64_t>(v));
    if (!std::holds_alternative<std::monostate>(v)) {
      if (absl::Status s = CheckValue(v, in.type()); !s.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("graph ", name_, ": input '", in.name(), "': ", s.message()));
      }
    }
    values["@" + in.name()] = std::move(v);
  }
  // Create and open every kernel before anything runs: models load here, once.
  std::map<std::string, std::unique_ptr<NodeKernel>> kernels;
  NodeDispatcher* const dispatcher = options.dispatcher;
  auto remote = [&](const PlannedNode& p) { return dispatcher && dispatcher->Handles(p.contract); };
  auto open = [&](const PlannedNode& p) -> absl::Status {
    if (remote(p)) return absl::OkStatus();
    SD_ASSIGN_OR_RETURN(const NodeKind* kind, NodeRegistry::Get().Find(p.node->kind()));
    std::unique_ptr<NodeKernel> k = kind->create(p.node->options());
    absl::Status s = CatchExceptions("", [&] { return k->Open(ctx); });
    if (!s.ok())
      return absl::Status(s.code(), absl::StrCat("node '", p.node->name(), "' (", p.node->kind(),
                                                 "): ", s.message()));
    kernels[p.node->name()] = std::move(k);
    return absl::OkStatus();
  };
  for (const PlannedNode& p : plan_->nodes) SD_RETURN_IF_ERROR(open(p));
  for (const PlannedLoop& l : plan_->loops) {
    for (const PlannedNode& p : l.body) SD_RETURN_IF_ERROR(open(p));
  }
  for (const std::string& c : options.capture) {
    if (!plan_->types.count(c)) {
      return absl::InvalidArgumentError(absl::StrCat("graph ", name_, ": nothing named '", c,
                                                     "' to capture (NODE.PORT or LOOP.CARRY)"));
    }
  }
  using Lookup = std::function<const Value*(const std::string&)>;
  auto who_of = [](const PlannedNode& p) {
    return absl::StrCat("node '", p.node->name(), "' (", p.node->kind(), ")");
  };
  auto gather = [&](const PlannedNode& p,
                    const Lookup& lookup) -> absl::StatusOr<std::map<std::string, Value>> {
    if (options.cancelled && options.cancelled->load()) {
      return absl::CancelledError(
          absl::StrCat("graph ", name_, ": run cancelled before ", who_of(p)));
    }
    std::map<std::string, Value> in;
    for (const auto& [port, src] : p.inputs) {
      const Value* v = lookup(src);
      if (!v || std::holds_alternative<std::monostate>(*v)) {
        if (p.contract.Input(port)->optional) continue;
        return absl::InvalidArgumentError(
            absl::StrCat(who_of(p), " input '", port, "': '", src, "' has no value"));
      }
      if (absl::Status s = CheckValue(*v, p.contract.Input(port)->type); !s.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(who_of(p), " input '", port, "': ", s.message()));
      }
      in[port] = *v;
    }
    return in;
  };
  auto execute = [&](const PlannedNode& p, const std::map<std::string, Value>& in,
                     int step) -> absl::StatusOr<NodeOutputs> {
    // Runs on wave threads too: nothing may throw out of here.
    return CatchExceptions("", [&]() -> absl::StatusOr<NodeOutputs> {
      if (remote(p)) {
        NodeCall call{p.node->name(),
                      p.node->kind(),
                      p.node->options(),
                      p.contract,
                      in,
                      ctx.checkpoint,
                      step};
        return dispatcher->Call(call, options.cancelled);
      }
      NodeOutputs out;
      c10::InferenceMode guard;
      SD_RETURN_IF_ERROR(
          kernels.at(p.node->name())->Process(NodeInputs(&in, &p.node->name()), out));
      return out;
    });
  };
  auto finish = [&](const PlannedNode& p, absl::StatusOr<NodeOutputs> out, int step,
                    int steps) -> absl::Status {
    const std::string who = who_of(p);
    if (!out.ok())
      return absl::Status(out.status().code(), absl::StrCat(who, ": ", out.status().message()));
    for (const PortSpec& o : p.contract.outputs) {
      auto it = out->find(o.name);
      if (it == out->end())
        return absl::InternalError(absl::StrCat(who, " did not produce output '", o.name, "'"));
      if (absl::Status c = CheckValue(it->second, o.type); !c.ok()) {
        return absl::InternalError(absl::StrCat(who, " output '", o.name, "': ", c.message()));
      }
      values[p.node->name() + "." + o.name] = std::move(it->second);
    }
    if (options.on_progress) options.on_progress({step, steps, p.node->name(), elapsed()});
    return absl::OkStatus();
  };
  // Runs nodes of one level (independent of each other): dispatched ones at the same time on their
  // own threads, local ones meanwhile on this thread; results are stored in the plan's order.
  auto run_wave = [&](const std::vector<const PlannedNode*>& wave, const Lookup& lookup, int step,
                      int steps) -> absl::Status {
    std::vector<std::map<std::string, Value>> ins(wave.size());
    for (size_t i = 0; i < wave.size(); ++i) {
      auto in = gather(*wave[i], lookup);
      if (!in.ok()) return in.status();
      ins[i] = std::move(*in);
    }
    std::vector<std::optional<absl::StatusOr<NodeOutputs>>> outs(wave.size());
    std::vector<std::thread> threads;
    size_t dispatched = 0;
    for (const PlannedNode* p : wave) dispatched += remote(*p) ? 1 : 0;
    for (size_t i = 0; i < wave.size(); ++i) {
      if (dispatched > 1 && remote(*wave[i])) {
        threads.emplace_back([&, i] { outs[i] = execute(*wave[i], ins[i], step); });
      }
    }
    for (size_t i = 0; i < wave.size(); ++i) {
      if (!(dispatched > 1 && remote(*wave[i]))) outs[i] = execute(*wave[i], ins[i], step);
    }
    for (std::thread& t : threads) t.join();
    for (size_t i = 0; i < wave.size(); ++i)
      SD_RETURN_IF_ERROR(finish(*wave[i], std::move(*outs[i]), step, steps));
    return absl::OkStatus();
  };
  // RunOptions::release_models: closes the kernels of nodes that will not run again in this run and
  // drops the networks nothing holds any more.
  auto release = [&](const std::vector<const PlannedNode*>& done) {
    if (!options.release_models) return;
    bool closed = false;
    for (const PlannedNode* p : done) closed = kernels.erase(p->node->name()) > 0 || closed;
    if (closed && ctx.models) ctx.models->DropUnreferenced();
  };
  auto run_levels = [&](const std::vector<const PlannedNode*>& nodes, const Lookup& lookup,
                        int step, int steps) -> absl::Status {
    for (size_t i = 0; i < nodes.size();) {
      size_t j = i;
      std::vector<const PlannedNode*> wave;
      while (j < nodes.size() && nodes[j]->level == nodes[i]->level) wave.push_back(nodes[j++]);
      SD_RETURN_IF_ERROR(run_wave(wave, lookup, step, steps));
      if (step == 0) release(wave);  // top-level nodes run once
      i = j;
    }
    return absl::OkStatus();
  };
  auto outer = [&](const std::string& src) -> const Value* {
    auto it = values.find(src);
    return it == values.end() ? nullptr : &it->second;
  };
  std::vector<const PlannedNode*> pending;  // top-level nodes of one level, run together
  auto flush = [&]() -> absl::Status {
    absl::Status s = run_levels(pending, outer, 0, 0);
    pending.clear();
    return s;
  };
  for (const auto& [is_loop, index] : plan_->order) {
    if (!is_loop) {
      pending.push_back(&plan_->nodes[index]);
      continue;
    }
    SD_RETURN_IF_ERROR(flush());
    const PlannedLoop& pl = plan_->loops[index];
    const Value* tsv = outer(pl.loop->timesteps());
    if (!tsv || !std::holds_alternative<torch::Tensor>(*tsv)) {
      return absl::InvalidArgumentError(absl::StrCat("loop '", pl.loop->name(), "': no timesteps"));
    }
    const torch::Tensor ts = std::get<torch::Tensor>(*tsv).contiguous();
    const bool float_steps = ts.is_floating_point();
    std::map<std::string, Value> carries;
    for (const v1::Carry& c : pl.loop->carry()) {
      const Value* init = outer(c.init());
      if (!init)
        return absl::InvalidArgumentError(absl::StrCat(
            "loop '", pl.loop->name(), "' carry '", c.name(), "': '", c.init(), "' has no value"));
      carries[c.name()] = *init;
    }
    const int steps = static_cast<int>(ts.numel());
    std::vector<const PlannedNode*> body;
    for (const PlannedNode& p : pl.body) body.push_back(&p);
    for (int i = 0; i < steps; ++i) {
      const Value t = float_steps ? Value(ts[i].item<double>()) : Value(ts[i].item<int64_t>());
      const Value idx = static_cast<int64_t>(i);
      auto scoped = [&](const std::string& src) -> const Value* {
        if (src.rfind(kLoopScope, 0) == 0) {
          const std::string var = src.substr(std::strlen(kLoopScope));
          if (var == "t") return &t;
          if (var == "index") return &idx;
          auto it = carries.find(var);
          return it == carries.end() ? nullptr : &it->second;
        }
        return outer(src);
      };
      SD_RETURN_IF_ERROR(run_levels(body, scoped, i + 1, steps));
      for (const v1::Carry& c : pl.loop->carry()) carries[c.name()] = values[c.next()];
    }
    for (auto& [name, v] : carries) values[pl.loop->name() + "." + name] = std::move(v);
    release(body);
  }
  SD_RETURN_IF_ERROR(flush());
  std::map<std::string, Value> result;
  for (const std::string& c : options.capture)
    result[c] = values[c];  // inside loops: the last step's value
  for (const v1::GraphOutput& o : config_->output()) result[o.name()] = values[o.source()];
  return result;
}

}  // namespace sd

#include "host_plugin/runtime/graph.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>
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

using google::protobuf::TextFormat;

class Collector : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    if (error.empty()) error = absl::StrCat(line + 1, ":", column + 1, ": ", message);
  }
  std::string error;
};

constexpr char kLoopScope[] = "@loop.";

}  // namespace

struct PlannedNode {
  const v1::Node* node = nullptr;
  const NodeKind* kind = nullptr;
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

struct Graph::Plan {
  std::vector<PlannedNode> nodes;
  std::vector<PlannedLoop> loops;
  std::vector<std::pair<bool, int>> order;    // (is_loop, index) in execution order
  std::map<std::string, v1::PortType> types;  // every source key -> its type
};

namespace {

// Builds the plan, checking everything that can be checked without running: every error names the
// file, line, node and port.
class Planner {
 public:
  Planner(const std::string& file, const v1::GraphConfig& g, const TextFormat::ParseInfoTree* tree)
      : file_(file), g_(g), tree_(tree) {}

  absl::StatusOr<std::shared_ptr<Graph::Plan>> Build();

 private:
  absl::Status Err(int line, const std::string& where, const std::string& msg) const {
    return absl::InvalidArgumentError(absl::StrCat("graph ", file_,
                                                   line > 0 ? absl::StrCat(":", line) : "", ": ",
                                                   where.empty() ? "" : where + ": ", msg));
  }
  int LineOf(const TextFormat::ParseInfoTree* t, const char* field, int index = -1) const;
  absl::StatusOr<PlannedNode> PlanNode(const v1::Node& n, int line);
  // Resolves the type of `source`, visible from a node inside loop `loop` (nullptr: top level).
  absl::StatusOr<v1::PortType> SourceType(const std::string& source, const PlannedLoop* loop,
                                          const std::set<std::string>& body_names) const;

  const std::string& file_;
  const v1::GraphConfig& g_;
  const TextFormat::ParseInfoTree* tree_;
  std::shared_ptr<Graph::Plan> plan_ = std::make_shared<Graph::Plan>();
  std::map<std::string, const PlannedNode*> top_nodes_;
  std::map<std::string, std::string> body_owner_;    // body node name -> loop name
  std::map<std::string, v1::PortType> carry_types_;  // "loop.carry"
};

int Planner::LineOf(const TextFormat::ParseInfoTree* t, const char* field, int index) const {
  if (!t) return 0;
  const auto* d = v1::GraphConfig::descriptor()->FindFieldByName(field);
  if (!d) return 0;
  auto loc = t->GetLocation(d, index);
  return loc.line >= 0 ? loc.line + 1 : 0;
}

absl::StatusOr<PlannedNode> Planner::PlanNode(const v1::Node& n, int line) {
  PlannedNode p;
  p.node = &n;
  p.line = line;
  const std::string where = absl::StrCat("node '", n.name(), "'");
  if (n.name().empty() || n.name().find_first_of(".=@ ") != std::string::npos) {
    return Err(line, where, "a node needs a name without '.', '=', '@' or spaces");
  }
  auto kind = NodeRegistry::Get().Find(n.kind());
  if (!kind.ok()) return Err(line, where, std::string(kind.status().message()));
  p.kind = *kind;
  p.contract = p.kind->contract();
  if (n.has_options()) {
    const std::string want = p.contract.options ? p.contract.options->full_name() : "";
    const std::string type = n.options().type_url().substr(n.options().type_url().rfind('/') + 1);
    if (want.empty())
      return Err(line, where, absl::StrCat(n.kind(), " takes no options, got ", type));
    if (type != want)
      return Err(line, where, absl::StrCat("options must be ", want, ", got ", type));
  }
  std::set<std::string> seen;
  for (const std::string& in : n.input()) {
    std::vector<std::string> kv = absl::StrSplit(in, absl::MaxSplits('=', 1));
    if (kv.size() != 2 || kv[0].empty() || kv[1].empty()) {
      return Err(line, where, absl::StrCat("input '", in, "' is not PORT=SOURCE"));
    }
    if (!p.contract.Input(kv[0])) {
      std::vector<std::string> ports;
      for (const PortSpec& s : p.contract.inputs) ports.push_back(s.name);
      return Err(line, where,
                 absl::StrCat(n.kind(), " has no input '", kv[0],
                              "' (inputs: ", absl::StrJoin(ports, ", "), ")"));
    }
    if (!seen.insert(kv[0]).second)
      return Err(line, where, absl::StrCat("input '", kv[0], "' is wired twice"));
    p.inputs.emplace_back(kv[0], kv[1]);
  }
  for (const PortSpec& s : p.contract.inputs) {
    if (!s.optional && !seen.count(s.name)) {
      return Err(
          line, where,
          absl::StrCat("required input '", s.name, "' (", DescribeType(s.type), ") is not wired"));
    }
  }
  return p;
}

absl::StatusOr<v1::PortType> Planner::SourceType(const std::string& source, const PlannedLoop* loop,
                                                 const std::set<std::string>& body_names) const {
  if (source.rfind(kLoopScope, 0) == 0) {
    if (!loop)
      return absl::InvalidArgumentError(
          absl::StrCat("'", source, "' is only visible inside a loop body"));
    const std::string var = source.substr(std::strlen(kLoopScope));
    if (var == "index") return ScalarPort(v1::INT);
    if (var == "t") {
      auto it = carry_types_.find(loop->loop->name() + ".@t");
      return it != carry_types_.end() ? it->second : ScalarPort(v1::INT);
    }
    auto it = carry_types_.find(loop->loop->name() + "." + var);
    if (it == carry_types_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("loop '", loop->loop->name(), "' has no carried value '", var, "'"));
    }
    return it->second;
  }
  if (source[0] == '@') {
    auto it = plan_->types.find(source);
    if (it == plan_->types.end()) {
      return absl::InvalidArgumentError(absl::StrCat("no graph input '", source.substr(1), "'"));
    }
    return it->second;
  }
  std::vector<std::string> np = absl::StrSplit(source, absl::MaxSplits('.', 1));
  if (np.size() != 2)
    return absl::InvalidArgumentError(
        absl::StrCat("source '", source, "' is not NODE.PORT or @INPUT"));
  if (loop && body_names.count(np[0])) {
    for (const PlannedNode& b : loop->body) {
      if (b.node->name() == np[0]) {
        if (const PortSpec* o = b.contract.Output(np[1])) return o->type;
        return absl::InvalidArgumentError(
            absl::StrCat("node '", np[0], "' (", b.node->kind(), ") has no output '", np[1], "'"));
      }
    }
  }
  if (auto it = body_owner_.find(np[0]);
      it != body_owner_.end() && (!loop || it->second != loop->loop->name())) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", source, "' is inside loop '", it->second,
                     "'; outside it only the loop's carried values are visible"));
  }
  if (auto it = top_nodes_.find(np[0]); it != top_nodes_.end()) {
    if (const PortSpec* o = it->second->contract.Output(np[1])) return o->type;
    std::vector<std::string> ports;
    for (const PortSpec& s : it->second->contract.outputs) ports.push_back(s.name);
    return absl::InvalidArgumentError(
        absl::StrCat("node '", np[0], "' (", it->second->node->kind(), ") has no output '", np[1],
                     "' (outputs: ", absl::StrJoin(ports, ", "), ")"));
  }
  if (auto it = carry_types_.find(source); it != carry_types_.end()) return it->second;
  return absl::InvalidArgumentError(
      absl::StrCat("'", source, "' names no node, loop or graph input (dangling edge)"));
}

absl::StatusOr<std::shared_ptr<Graph::Plan>> Planner::Build() {
  // Graph inputs.
  for (int i = 0; i < g_.input_size(); ++i) {
    const v1::GraphInput& in = g_.input(i);
    const int line = LineOf(tree_, "input", i);
    if (in.name().empty()) return Err(line, "", "a graph input needs a name");
    if (in.type().kind() == v1::VALUE_KIND_UNSPECIFIED)
      return Err(line, absl::StrCat("input '", in.name(), "'"), "needs a type");
    if (!plan_->types.emplace("@" + in.name(), in.type()).second) {
      return Err(line, "", absl::StrCat("graph input '", in.name(), "' is declared twice"));
    }
  }
  std::set<std::string> names;
  auto claim = [&](const std::string& name, int line) -> absl::Status {
    if (!names.insert(name).second)
      return Err(line, "", absl::StrCat("the name '", name, "' is used twice"));
    return absl::OkStatus();
  };
  // Top-level nodes and loop bodies: contracts first.
  for (int i = 0; i < g_.node_size(); ++i) {
    const int line = LineOf(tree_, "node", i);
    SD_ASSIGN_OR_RETURN(PlannedNode p, PlanNode(g_.node(i), line));
    SD_RETURN_IF_ERROR(claim(p.node->name(), line));
    plan_->nodes.push_back(std::move(p));
  }
  for (const PlannedNode& p : plan_->nodes) top_nodes_[p.node->name()] = &p;
  for (int i = 0; i < g_.loop_size(); ++i) {
    const v1::Loop& l = g_.loop(i);
    PlannedLoop pl;
    pl.loop = &l;
    pl.line = LineOf(tree_, "loop", i);
    const TextFormat::ParseInfoTree* lt =
        tree_ ? tree_->GetTreeForNested(v1::GraphConfig::descriptor()->FindFieldByName("loop"), i)
              : nullptr;
    SD_RETURN_IF_ERROR(claim(l.name(), pl.line));
    if (l.name().empty() || l.name().find_first_of(".=@ ") != std::string::npos) {
      return Err(pl.line, "", "a loop needs a name without '.', '=', '@' or spaces");
    }
    for (int j = 0; j < l.node_size(); ++j) {
      int line = pl.line;
      if (lt) {
        auto loc = lt->GetLocation(v1::Loop::descriptor()->FindFieldByName("node"), j);
        if (loc.line >= 0) line = loc.line + 1;
      }
      SD_ASSIGN_OR_RETURN(PlannedNode p, PlanNode(l.node(j), line));
      SD_RETURN_IF_ERROR(claim(p.node->name(), line));
      body_owner_[p.node->name()] = l.name();
      pl.body.push_back(std::move(p));
    }
    plan_->loops.push_back(std::move(pl));
  }
  // Order the top-level units (nodes and loops) by their dependencies; loops' carried values become
  // visible as they are ordered.
  const size_t units = plan_->nodes.size() + plan_->loops.size();
  auto unit_name = [&](size_t u) {
    return u < plan_->nodes.size() ? plan_->nodes[u].node->name()
                                   : plan_->loops[u - plan_->nodes.size()].loop->name();
  };
  std::map<std::string, size_t> unit_of;
  for (size_t u = 0; u < units; ++u) unit_of[unit_name(u)] = u;
  auto producer = [&](const std::string& source) -> int {
    if (source[0] == '@') return -1;
    const std::string head = source.substr(0, source.find('.'));
    auto it = unit_of.find(head);
    return it == unit_of.end() ? -1 : static_cast<int>(it->second);
  };
  std::vector<std::set<size_t>> deps(units);
  for (size_t u = 0; u < plan_->nodes.size(); ++u) {
    for (const auto& [port, src] : plan_->nodes[u].inputs) {
      if (int p = producer(src); p >= 0) deps[u].insert(p);
    }
  }
  for (size_t li = 0; li < plan_->loops.size(); ++li) {
    const size_t u = plan_->nodes.size() + li;
    std::vector<std::string> sources = {plan_->loops[li].loop->timesteps()};
    for (const v1::Carry& c : plan_->loops[li].loop->carry()) sources.push_back(c.init());
    for (const PlannedNode& b : plan_->loops[li].body) {
      for (const auto& [port, src] : b.inputs) sources.push_back(src);
    }
    for (const std::string& s : sources) {
      if (s.empty()) continue;
      if (int p = producer(s); p >= 0 && static_cast<size_t>(p) != u) deps[u].insert(p);
    }
  }
  std::vector<bool> done(units, false);
  for (size_t round = 0; round < units; ++round) {
    bool progressed = false;
    for (size_t u = 0; u < units; ++u) {
      if (done[u]) continue;
      bool ready = true;
      for (size_t d : deps[u]) ready = ready && done[d];
      if (!ready) continue;
      done[u] = true;
      progressed = true;
      plan_->order.emplace_back(
          u >= plan_->nodes.size(),
          static_cast<int>(u < plan_->nodes.size() ? u : u - plan_->nodes.size()));
    }
    if (!progressed) break;
  }
  if (plan_->order.size() == units) {
    std::vector<int> level(units, 0);
    for (const auto& [is_loop, index] : plan_->order) {
      const size_t u = is_loop ? plan_->nodes.size() + index : index;
      for (size_t d : deps[u]) level[u] = std::max(level[u], level[d] + 1);
      (is_loop ? plan_->loops[index].level : plan_->nodes[index].level) = level[u];
    }
    std::stable_sort(plan_->order.begin(), plan_->order.end(), [&](const auto& a, const auto& b) {
      return level[a.first ? plan_->nodes.size() + a.second : a.second] <
             level[b.first ? plan_->nodes.size() + b.second : b.second];
    });
  }
  if (plan_->order.size() != units) {
    std::vector<std::string> stuck;
    for (size_t u = 0; u < units; ++u) {
      if (!done[u]) stuck.push_back(unit_name(u));
    }
    return Err(0, "", absl::StrCat("cycle outside a loop among: ", absl::StrJoin(stuck, ", ")));
  }
  // Types along every edge, in execution order.
  auto check_node = [&](const PlannedNode& p, const PlannedLoop* loop,
                        const std::set<std::string>& body) -> absl::Status {
    for (const auto& [port, src] : p.inputs) {
      const std::string where = absl::StrCat("node '", p.node->name(), "' input '", port, "'");
      absl::StatusOr<v1::PortType> from = SourceType(src, loop, body);
      if (!from.ok()) return Err(p.line, where, std::string(from.status().message()));
      const PortSpec* to = p.contract.Input(port);
      if (!Compatible(*from, to->type)) {
        return Err(p.line, where,
                   absl::StrCat("expected ", DescribeType(to->type), ", but '", src, "' is ",
                                DescribeType(*from)));
      }
    }
    for (const PortSpec& o : p.contract.outputs)
      plan_->types[p.node->name() + "." + o.name] = o.type;
    return absl::OkStatus();
  };
  for (const auto& [is_loop, index] : plan_->order) {
    if (!is_loop) {
      SD_RETURN_IF_ERROR(check_node(plan_->nodes[index], nullptr, {}));
      continue;
    }
    PlannedLoop& pl = plan_->loops[index];
    const std::string lname = pl.loop->name();
    if (pl.loop->timesteps().empty())
      return Err(pl.line, absl::StrCat("loop '", lname, "'"), "needs timesteps");
    absl::StatusOr<v1::PortType> ts = SourceType(pl.loop->timesteps(), nullptr, {});
    if (!ts.ok())
      return Err(pl.line, absl::StrCat("loop '", lname, "' timesteps"),
                 std::string(ts.status().message()));
    const bool int_steps = Compatible(*ts, TensorPort(v1::INT64, 1));
    if (!int_steps && !Compatible(*ts, TensorPort(v1::FLOAT32, 1))) {
      return Err(
          pl.line, absl::StrCat("loop '", lname, "' timesteps"),
          absl::StrCat("expected an int64 or float32 tensor of rank 1, got ", DescribeType(*ts)));
    }
    carry_types_[lname + ".@t"] = ScalarPort(int_steps ? v1::INT : v1::FLOAT);
    if (pl.loop->carry_size() == 0)
      return Err(pl.line, absl::StrCat("loop '", lname, "'"), "carries nothing");
    for (const v1::Carry& c : pl.loop->carry()) {
      const std::string where = absl::StrCat("loop '", lname, "' carry '", c.name(), "'");
      absl::StatusOr<v1::PortType> init = SourceType(c.init(), nullptr, {});
      if (!init.ok()) return Err(pl.line, where + " init", std::string(init.status().message()));
      carry_types_[lname + "." + c.name()] = *init;
    }
    // The body, ordered by its own dependencies (carried values are the only way around the loop).
    std::set<std::string> body_names;
    for (const PlannedNode& b : pl.body) body_names.insert(b.node->name());
    std::vector<PlannedNode> ordered;
    std::set<std::string> placed;
    while (ordered.size() < pl.body.size()) {
      bool progressed = false;
      for (PlannedNode& b : pl.body) {
        if (placed.count(b.node->name())) continue;
        bool ready = true;
        for (const auto& [port, src] : b.inputs) {
          const std::string head = src.substr(0, src.find('.'));
          if (src[0] != '@' && body_names.count(head) && !placed.count(head)) ready = false;
        }
        if (!ready) continue;
        placed.insert(b.node->name());
        ordered.push_back(b);
        progressed = true;
      }
      if (!progressed) {
        std::vector<std::string> stuck;
        for (const PlannedNode& b : pl.body) {
          if (!placed.count(b.node->name())) stuck.push_back(b.node->name());
        }
        return Err(pl.line, absl::StrCat("loop '", lname, "'"),
                   absl::StrCat("cycle in the body among: ", absl::StrJoin(stuck, ", "),
                                " (values go around the loop only as carries)"));
      }
    }
    std::map<std::string, int> body_level;
    for (PlannedNode& b : ordered) {
      for (const auto& [port, src] : b.inputs) {
        const std::string head = src.substr(0, src.find('.'));
        if (src[0] != '@' && body_level.count(head))
          b.level = std::max(b.level, body_level[head] + 1);
      }
      body_level[b.node->name()] = b.level;
    }
    std::stable_sort(ordered.begin(), ordered.end(),
                     [](const PlannedNode& a, const PlannedNode& b) { return a.level < b.level; });
    pl.body = std::move(ordered);
    for (const PlannedNode& b : pl.body) SD_RETURN_IF_ERROR(check_node(b, &pl, body_names));
    for (const v1::Carry& c : pl.loop->carry()) {
      const std::string where = absl::StrCat("loop '", lname, "' carry '", c.name(), "' next");
      const std::string head = c.next().substr(0, c.next().find('.'));
      if (!body_names.count(head))
        return Err(pl.line, where,
                   absl::StrCat("'", c.next(), "' must be an output of a body node"));
      absl::StatusOr<v1::PortType> next = SourceType(c.next(), &pl, body_names);
      if (!next.ok()) return Err(pl.line, where, std::string(next.status().message()));
      if (!Compatible(*next, carry_types_[lname + "." + c.name()])) {
        return Err(pl.line, where,
                   absl::StrCat("is ", DescribeType(*next), " but init is ",
                                DescribeType(carry_types_[lname + "." + c.name()])));
      }
    }
    for (const v1::Carry& c : pl.loop->carry())
      plan_->types[lname + "." + c.name()] = carry_types_[lname + "." + c.name()];
    carry_types_.erase(lname + ".@t");
  }
  if (g_.output_size() == 0) return Err(0, "", "the graph has no outputs");
  for (int i = 0; i < g_.output_size(); ++i) {
    const v1::GraphOutput& o = g_.output(i);
    absl::StatusOr<v1::PortType> t = SourceType(o.source(), nullptr, {});
    if (!t.ok())
      return Err(LineOf(tree_, "output", i), absl::StrCat("output '", o.name(), "'"),
                 std::string(t.status().message()));
  }
  return plan_;
}

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
  Graph g;
  g.name_ = name;
  TextFormat::Parser parser;
  Collector errors;
  parser.RecordErrorsTo(&errors);
  TextFormat::ParseInfoTree tree;
  parser.WriteLocationsTo(&tree);
  auto config = std::make_shared<v1::GraphConfig>();
  if (!parser.ParseFromString(text, config.get())) {
    return absl::InvalidArgumentError(absl::StrCat("graph ", name, ":", errors.error));
  }
  g.config_ = std::move(config);
  Planner planner(g.name_, *g.config_, &tree);
  SD_ASSIGN_OR_RETURN(std::shared_ptr<Plan> plan, planner.Build());
  g.plan_ = std::move(plan);
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
    std::unique_ptr<NodeKernel> k = p.kind->create(p.node->options());
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

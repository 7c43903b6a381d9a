#include "host_plugin/runtime/graph_plan.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "nodes/base/status_macros.h"

namespace sd {

namespace {

// Builds the plan, checking everything that can be checked without running: every error names the
// file, line, node and port.
class Planner {
 public:
  Planner(const std::string& file, const ExpandedGraph& ex, const ContractLookup& contracts)
      : file_(file), g_(*ex.config), ex_(ex), contracts_(contracts) {}

  absl::StatusOr<std::shared_ptr<GraphPlan>> Build();

 private:
  absl::Status Err(const SourceLoc& loc, const std::string& where, const std::string& msg) const {
    return GraphError(loc, where, msg);
  }
  // The graph as a whole (errors without a line).
  SourceLoc File() const { return {file_}; }
  absl::StatusOr<PlannedNode> PlanNode(const v1::Node& n, const SourceLoc& line);
  // What is wired to a subgraph's input has the type the subgraph declares. Early: sources typed
  // before the edges are (graph inputs, node outputs); late: the rest (carried values).
  absl::Status CheckDeclaredTypes(bool early) const;
  // Resolves the type of `source`, visible from a node inside loop `loop` (nullptr: top level).
  absl::StatusOr<v1::PortType> SourceType(const std::string& source, const PlannedLoop* loop,
                                          const std::set<std::string>& body_names) const;

  const std::string& file_;
  const v1::GraphConfig& g_;
  const ExpandedGraph& ex_;
  const ContractLookup& contracts_;
  std::shared_ptr<GraphPlan> plan_ = std::make_shared<GraphPlan>();
  std::map<std::string, const PlannedNode*> top_nodes_;
  std::map<std::string, std::string> body_owner_;    // body node name -> loop name
  std::map<std::string, v1::PortType> carry_types_;  // "loop.carry"
};

absl::StatusOr<PlannedNode> Planner::PlanNode(const v1::Node& n, const SourceLoc& line) {
  PlannedNode p;
  p.node = &n;
  p.loc = line;
  const std::string where = absl::StrCat("node '", n.name(), "'");
  if (n.name().empty() || n.name().find_first_of(".=@# ") != std::string::npos) {
    return Err(line, where, "a node needs a name without '.', '=', '@', '#' or spaces");
  }
  absl::StatusOr<NodeContract> contract = contracts_(n.kind());
  if (!contract.ok()) return Err(line, where, std::string(contract.status().message()));
  p.contract = *std::move(contract);
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

absl::StatusOr<std::shared_ptr<GraphPlan>> Planner::Build() {
  // Graph inputs.
  for (int i = 0; i < g_.input_size(); ++i) {
    const v1::GraphInput& in = g_.input(i);
    const SourceLoc& line = ex_.inputs[i];
    if (in.name().empty()) return Err(line, "", "a graph input needs a name");
    if (in.type().kind() == v1::VALUE_KIND_UNSPECIFIED)
      return Err(line, absl::StrCat("input '", in.name(), "'"), "needs a type");
    if (!plan_->types.emplace("@" + in.name(), in.type()).second) {
      return Err(line, "", absl::StrCat("graph input '", in.name(), "' is declared twice"));
    }
  }
  std::set<std::string> names;
  auto claim = [&](const std::string& name, const SourceLoc& line) -> absl::Status {
    if (!names.insert(name).second)
      return Err(line, "", absl::StrCat("the name '", name, "' is used twice"));
    return absl::OkStatus();
  };
  // Top-level nodes and loop bodies: contracts first.
  for (int i = 0; i < g_.node_size(); ++i) {
    const SourceLoc& line = ex_.nodes[i];
    SD_ASSIGN_OR_RETURN(PlannedNode p, PlanNode(g_.node(i), line));
    SD_RETURN_IF_ERROR(claim(p.node->name(), line));
    plan_->nodes.push_back(std::move(p));
  }
  for (const PlannedNode& p : plan_->nodes) top_nodes_[p.node->name()] = &p;
  for (int i = 0; i < g_.loop_size(); ++i) {
    const v1::Loop& l = g_.loop(i);
    PlannedLoop pl;
    pl.loop = &l;
    pl.loc = ex_.loops[i];
    SD_RETURN_IF_ERROR(claim(l.name(), pl.loc));
    if (l.name().empty() || l.name().find_first_of(".=@ ") != std::string::npos) {
      return Err(pl.loc, "", "a loop needs a name without '.', '=', '@' or spaces");
    }
    for (int j = 0; j < l.node_size(); ++j) {
      const SourceLoc& line = ex_.loop_nodes[i][j];
      SD_ASSIGN_OR_RETURN(PlannedNode p, PlanNode(l.node(j), line));
      SD_RETURN_IF_ERROR(claim(p.node->name(), line));
      body_owner_[p.node->name()] = l.name();
      pl.body.push_back(std::move(p));
    }
    plan_->loops.push_back(std::move(pl));
  }
  SD_RETURN_IF_ERROR(CheckDeclaredTypes(/*early=*/true));
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
    return Err(File(), "",
               absl::StrCat("cycle outside a loop among: ", absl::StrJoin(stuck, ", ")));
  }
  // Types along every edge, in execution order.
  auto check_node = [&](const PlannedNode& p, const PlannedLoop* loop,
                        const std::set<std::string>& body) -> absl::Status {
    for (const auto& [port, src] : p.inputs) {
      const std::string where = absl::StrCat("node '", p.node->name(), "' input '", port, "'");
      absl::StatusOr<v1::PortType> from = SourceType(src, loop, body);
      if (!from.ok()) return Err(p.loc, where, std::string(from.status().message()));
      const PortSpec* to = p.contract.Input(port);
      if (!Compatible(*from, to->type)) {
        return Err(p.loc, where,
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
      return Err(pl.loc, absl::StrCat("loop '", lname, "'"), "needs timesteps");
    absl::StatusOr<v1::PortType> ts = SourceType(pl.loop->timesteps(), nullptr, {});
    if (!ts.ok())
      return Err(pl.loc, absl::StrCat("loop '", lname, "' timesteps"),
                 std::string(ts.status().message()));
    const bool int_steps = Compatible(*ts, TensorPort(v1::INT64, 1));
    if (!int_steps && !Compatible(*ts, TensorPort(v1::FLOAT32, 1))) {
      return Err(
          pl.loc, absl::StrCat("loop '", lname, "' timesteps"),
          absl::StrCat("expected an int64 or float32 tensor of rank 1, got ", DescribeType(*ts)));
    }
    carry_types_[lname + ".@t"] = ScalarPort(int_steps ? v1::INT : v1::FLOAT);
    if (pl.loop->carry_size() == 0)
      return Err(pl.loc, absl::StrCat("loop '", lname, "'"), "carries nothing");
    for (const v1::Carry& c : pl.loop->carry()) {
      const std::string where = absl::StrCat("loop '", lname, "' carry '", c.name(), "'");
      absl::StatusOr<v1::PortType> init = SourceType(c.init(), nullptr, {});
      if (!init.ok()) return Err(pl.loc, where + " init", std::string(init.status().message()));
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
        return Err(pl.loc, absl::StrCat("loop '", lname, "'"),
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
        return Err(pl.loc, where,
                   absl::StrCat("'", c.next(), "' must be an output of a body node"));
      absl::StatusOr<v1::PortType> next = SourceType(c.next(), &pl, body_names);
      if (!next.ok()) return Err(pl.loc, where, std::string(next.status().message()));
      if (!Compatible(*next, carry_types_[lname + "." + c.name()])) {
        return Err(pl.loc, where,
                   absl::StrCat("is ", DescribeType(*next), " but init is ",
                                DescribeType(carry_types_[lname + "." + c.name()])));
      }
    }
    for (const v1::Carry& c : pl.loop->carry())
      plan_->types[lname + "." + c.name()] = carry_types_[lname + "." + c.name()];
    carry_types_.erase(lname + ".@t");
  }
  if (g_.output_size() == 0) return Err(File(), "", "the graph has no outputs");
  for (int i = 0; i < g_.output_size(); ++i) {
    const v1::GraphOutput& o = g_.output(i);
    absl::StatusOr<v1::PortType> t = SourceType(o.source(), nullptr, {});
    if (!t.ok())
      return Err(ex_.outputs[i], absl::StrCat("output '", o.name(), "'"),
                 std::string(t.status().message()));
  }
  SD_RETURN_IF_ERROR(CheckDeclaredTypes(/*early=*/false));
  plan_->aliases = ex_.aliases;
  return plan_;
}

// Values read through "@loop." are checked at the ports they reach.
absl::Status Planner::CheckDeclaredTypes(bool early) const {
  auto node_output = [&](const std::string& source) -> const PortSpec* {
    const size_t dot = source.find('.');
    if (dot == std::string::npos) return nullptr;
    const std::string node = source.substr(0, dot), port = source.substr(dot + 1);
    if (auto it = top_nodes_.find(node); it != top_nodes_.end())
      return it->second->contract.Output(port);
    for (const PlannedLoop& l : plan_->loops) {
      for (const PlannedNode& b : l.body)
        if (b.node->name() == node) return b.contract.Output(port);
    }
    return nullptr;
  };
  for (const DeclaredType& d : ex_.declared) {
    std::optional<v1::PortType> type;
    if (!early) {
      if (auto it = plan_->types.find(d.source); it != plan_->types.end()) type = it->second;
    } else if (d.source[0] == '@') {
      if (auto it = plan_->types.find(d.source); it != plan_->types.end()) type = it->second;
    } else if (const PortSpec* out = node_output(d.source)) {
      type = out->type;
    }
    if (!type || Compatible(*type, d.type)) continue;
    return Err(d.loc, d.where,
               absl::StrCat("the subgraph expects ", DescribeType(d.type), ", but '", d.source,
                            "' is ", DescribeType(*type)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ParsedGraph> ParseGraph(const std::string& text, const std::string& name,
                                       const ContractLookup& contracts,
                                       const GraphImports& imports) {
  SD_ASSIGN_OR_RETURN(ExpandedGraph ex, ExpandSubgraphs(text, name, contracts, imports));
  Planner planner(name, ex, contracts);
  SD_ASSIGN_OR_RETURN(std::shared_ptr<GraphPlan> plan, planner.Build());
  ParsedGraph parsed;
  parsed.config = std::move(ex.config);
  parsed.plan = std::move(plan);
  return parsed;
}

}  // namespace sd

// libFuzzer target: the graph text parser and planner (ParseGraph) on arbitrary text. The node
// kinds are the real ones, read as data from the catalog `sd-graph kinds --textproto` writes (this
// target is built without LibTorch, so without the kinds themselves); run_fuzzers.sh passes its
// path in SD_FUZZ_NODE_KINDS. Whatever the planner accepts is walked in full, checking the promises
// Graph::Run relies on: every ordered unit exists once, every wired port is in its kind's contract,
// every required input is wired, and every source a node or output reads has a type.

#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>

#include "host_plugin/runtime/graph_plan.h"
#include "tests/fuzz/fuzz_node_kinds.h"

namespace {

void Die(const std::string& why) {
  std::fprintf(stderr, "graph_fuzzer: %s\n", why.c_str());
  std::abort();
}

void CheckNode(const sd::PlannedNode& p, const sd::GraphPlan& plan) {
  if (!p.node) Die("a planned node without its config");
  std::set<std::string> wired;
  for (const auto& [port, source] : p.inputs) {
    if (!p.contract.Input(port))
      Die("node " + p.node->name() + " reads an undeclared port " + port);
    if (source.empty()) Die("node " + p.node->name() + " has an empty source");
    // Everything but the loop's own values (@loop.index, @loop.t, @loop.CARRY) was typed.
    if (source.rfind(sd::kLoopScope, 0) != 0 && !plan.types.count(source))
      Die("node " + p.node->name() + " reads an untyped source " + source);
    wired.insert(port);
  }
  for (const sd::PortSpec& s : p.contract.inputs) {
    if (!s.optional && !wired.count(s.name)) Die("required input " + s.name + " not wired");
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  sd::fuzz::LoadNodeKinds("graph_fuzzer");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<sd::ParsedGraph> parsed = sd::ParseGraph(text, "fuzz.pbtxt", sd::fuzz::LookupKind);
  if (!parsed.ok()) {
    if (parsed.status().code() != absl::StatusCode::kInvalidArgument)
      Die("a bad graph must be INVALID_ARGUMENT: " + parsed.status().ToString());
    if (parsed.status().message().find("fuzz.pbtxt") == absl::string_view::npos)
      Die("an error that does not name the file: " + parsed.status().ToString());
    return 0;
  }
  const sd::GraphPlan& plan = *parsed->plan;
  if (plan.order.size() != plan.nodes.size() + plan.loops.size())
    Die("units missing from the order");
  std::set<std::pair<bool, int>> seen;
  for (const auto& unit : plan.order) {
    const size_t limit = unit.first ? plan.loops.size() : plan.nodes.size();
    if (unit.second < 0 || static_cast<size_t>(unit.second) >= limit)
      Die("an order entry out of range");
    if (!seen.insert(unit).second) Die("a unit ordered twice");
  }
  for (const sd::PlannedNode& p : plan.nodes) CheckNode(p, plan);
  for (const sd::PlannedLoop& l : plan.loops) {
    if (!l.loop) Die("a planned loop without its config");
    for (const sd::PlannedNode& p : l.body) CheckNode(p, plan);
  }
  for (const auto& o : parsed->config->output()) {
    if (!plan.types.count(o.source()))
      Die("output " + o.name() + " reads an untyped source " + o.source());
  }
  return 0;
}

// libFuzzer target: the graph text parser and planner (ParseGraph) on arbitrary text. The node
// kinds are the real ones, read as data from the catalog `sd-graph kinds --textproto` writes (this
// target is built without LibTorch, so without the kinds themselves); run_fuzzers.sh passes its
// path in SD_FUZZ_NODE_KINDS. Whatever the planner accepts is walked in full, checking the promises
// Graph::Run relies on: every ordered unit exists once, every wired port is in its kind's contract,
// every required input is wired, and every source a node or output reads has a type. Imports are
// served from memory: the graph library's files (SD_FUZZ_GRAPH_LIB, read once), by file name.

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
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

std::map<std::string, std::string>& Library() {
  static auto* files = new std::map<std::string, std::string>();
  return *files;
}

void LoadLibrary() {
  const char* dir = std::getenv("SD_FUZZ_GRAPH_LIB");
  if (!dir) Die("set SD_FUZZ_GRAPH_LIB to the graph library folder (graphs/lib)");
  for (const auto& f : std::filesystem::directory_iterator(dir)) {
    std::ifstream in(f.path());
    std::stringstream text;
    text << in.rdbuf();
    Library()[f.path().filename().string()] = text.str();
  }
  if (Library().empty()) Die(std::string("no files in ") + dir);
}

sd::GraphImports Imports() {
  sd::GraphImports imports;
  imports.read = [](const std::string& path) -> absl::StatusOr<std::string> {
    auto it = Library().find(path);
    if (it == Library().end()) return absl::NotFoundError(path);
    return it->second;
  };
  return imports;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  sd::fuzz::LoadNodeKinds("graph_fuzzer");
  LoadLibrary();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  static const sd::GraphImports imports = Imports();
  absl::StatusOr<sd::ParsedGraph> parsed =
      sd::ParseGraph(text, "fuzz.pbtxt", sd::fuzz::LookupKind, imports);
  if (!parsed.ok()) {
    const absl::StatusCode code = parsed.status().code();
    if (code != absl::StatusCode::kInvalidArgument && code != absl::StatusCode::kNotFound)
      Die("a bad graph must be INVALID_ARGUMENT (NOT_FOUND: an import): " +
          parsed.status().ToString());
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

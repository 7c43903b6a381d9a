// libFuzzer target: a ComfyUI workflow file as a user or a website hands one over, through
// everything before a run: the PNG text chunks (first byte odd: the rest is a PNG), the JSON reader
// with its checks, the translation into graph text, and the planner on that text against the real
// node kinds (the catalog `sd-graph kinds --textproto` writes; run_fuzzers.sh passes it in
// SD_FUZZ_NODE_KINDS). Checks: a refusal is INVALID_ARGUMENT (NOT_FOUND for a PNG without a
// workflow) naming the file; the order holds each needed node once, after its inputs; a translated
// workflow always plans and (without ControlNets) exports (export-comfy), and the export imports
// and translates again.

#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>

#include "host_plugin/runtime/comfy_export.h"
#include "host_plugin/runtime/comfy_import.h"
#include "host_plugin/runtime/comfy_workflow.h"
#include "host_plugin/runtime/graph_plan.h"
#include "tests/fuzz/fuzz_node_kinds.h"

namespace {

void Die(const std::string& why) {
  std::fprintf(stderr, "comfy_fuzzer: %s\n", why.c_str());
  std::abort();
}

void CheckRefusal(const absl::Status& s, bool png) {
  const bool expected = s.code() == absl::StatusCode::kInvalidArgument ||
                        (png && s.code() == absl::StatusCode::kNotFound);
  if (!expected) Die("unexpected code: " + s.ToString());
  if (s.message().find("fuzz.json") == absl::string_view::npos)
    Die("a refusal without the file: " + s.ToString());
}

void CheckOrder(const sd::ComfyWorkflow& w) {
  std::set<std::string> seen;
  for (const std::string& id : w.order) {
    if (!w.nodes.count(id)) Die("ordered node " + id + " is not in the workflow");
    for (const auto& [port, link] : w.node(id).links) {
      if (!seen.count(link.node)) Die("node " + id + " ordered before its input " + link.node);
    }
    if (!seen.insert(id).second) Die("node " + id + " ordered twice");
  }
  for (const std::string& out : w.outputs) {
    if (!seen.count(out)) Die("output " + out + " not ordered");
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  sd::fuzz::LoadNodeKinds("comfy_fuzzer");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > 65536) return 0;
  const bool png = data[0] & 1;
  const std::string bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  std::string json = bytes;
  if (png) {
    auto prompt = sd::ComfyPromptFromPng(bytes, "fuzz.json");
    if (!prompt.ok()) {
      CheckRefusal(prompt.status(), true);
      return 0;
    }
    json = *prompt;
  }
  auto workflow = sd::ParseComfyWorkflow(json, "fuzz.json");
  if (!workflow.ok()) {
    CheckRefusal(workflow.status(), false);
    return 0;
  }
  CheckOrder(*workflow);
  auto graph = sd::TranslateComfyWorkflow(*workflow, {"in"});
  if (!graph.ok()) {
    CheckRefusal(graph.status(), false);
    return 0;
  }
  auto planned = sd::ParseGraph(graph->text, "translated.pbtxt", sd::fuzz::LookupKind);
  if (!planned.ok())
    Die("a translated workflow does not plan: " + planned.status().ToString() + "\n" + graph->text);
  // The way back: what import writes exports, and the export imports and translates again.
  sd::ComfyExportOptions options;
  options.controlnets = graph->model.controlnets;
  auto exported = sd::ExportComfyWorkflow(*planned->config, "translated.pbtxt", options);
  if (!exported.ok())
    Die("a translated workflow does not export: " + exported.status().ToString() + "\n" +
        graph->text);
  auto again = sd::ParseComfyWorkflow(*exported, "exported.json");
  if (!again.ok())
    Die("an exported workflow does not import: " + again.status().ToString() + "\n" + *exported);
  if (!sd::TranslateComfyWorkflow(*again, {"in"}).ok())
    Die("an exported workflow does not translate:\n" + *exported);
  return 0;
}

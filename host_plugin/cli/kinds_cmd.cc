// sd-graph kinds: the node kinds a graph file can use, with their ports, types and options.
#include <google/protobuf/text_format.h>

#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "host_plugin/cli/commands.h"
#include "host_plugin/cli/common.h"
#include "nodes/ops/node.h"

namespace sd::cli {

namespace {

constexpr char kHelp[] =
    "usage: sd-graph kinds [KIND...] [--textproto]\n"
    "\n"
    "Lists the node kinds graph files can use (all of them, or the KINDs named): each kind's "
    "inputs\n"
    "and outputs with their types (optional ports marked), its options message and what it does.\n"
    "\n"
    "  --textproto   write an sd.v1.NodeKindCatalog in protobuf text format instead (for tools;\n"
    "                the graph fuzzer plans against it)\n";

void PrintPorts(const char* title, const std::vector<PortSpec>& ports) {
  for (const PortSpec& p : ports) {
    std::string line = absl::StrCat("    ", title, " ", p.name, ": ", DescribeType(p.type),
                                    p.optional ? " (optional)" : "");
    if (!p.doc.empty()) absl::StrAppend(&line, " - ", p.doc);
    std::printf("%s\n", line.c_str());
  }
}

void PrintKind(const std::string& name, const NodeContract& c) {
  std::printf("%s%s\n", name.c_str(), c.needs_model ? "  [computes with the model]" : "");
  if (!c.doc.empty()) std::printf("    %s\n", c.doc.c_str());
  PrintPorts("in ", c.inputs);
  PrintPorts("out", c.outputs);
  if (c.options) std::printf("    options: %s\n", c.options->full_name().c_str());
}

}  // namespace

int KindsCommand(const std::vector<std::string>& argv) {
  int code = kExitOk;
  auto args = ParseCommandLine("kinds", argv, {{}, {"textproto"}}, kHelp, &code);
  if (!args) return code;
  StockNodeKinds();  // links the stock kinds
  std::vector<std::string> names = args->positionals();
  if (names.empty()) names = NodeRegistry::Get().Names();
  v1::NodeKindCatalog catalog;
  for (size_t i = 0; i < names.size(); ++i) {
    auto kind = NodeRegistry::Get().Find(names[i]);
    if (!kind.ok()) {
      Fail("kinds", kind.status());
      return kExitUsage;
    }
    const NodeContract contract = (*kind)->contract();
    if (args->Has("textproto")) {
      *catalog.add_kind() = ContractToInfo(names[i], contract);
    } else {
      if (i > 0) std::printf("\n");
      PrintKind(names[i], contract);
    }
  }
  if (args->Has("textproto")) {
    std::string text;
    google::protobuf::TextFormat::PrintToString(catalog, &text);
    std::fputs(text.c_str(), stdout);
  }
  return kExitOk;
}

}  // namespace sd::cli

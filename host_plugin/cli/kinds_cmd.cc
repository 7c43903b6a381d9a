// sd-graph kinds: the node kinds a graph file can use, with their ports, types and options.
#include <google/protobuf/text_format.h>

#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "host_plugin/cli/commands.h"
#include "host_plugin/cli/common.h"
#include "nodes/ops/node.h"
#ifdef SD_HAVE_OIIO
#include "host_plugin/cli/image_io.h"
#endif

namespace sd::cli {

namespace {

constexpr char kHelp[] =
    "usage: sd-graph kinds [KIND...] [--textproto]\n"
    "\n"
    "Lists the node kinds graph files can use (all of them, or the KINDs named): each kind's "
    "inputs\n"
    "and outputs with their types (optional ports marked), its options message and what it does.\n"
    "A tensor's [dims] give the size of each axis: a number, a symbol that means the same size on\n"
    "every port of the node (B, h), a product (h*f) or ? (any); a value that does not fit is "
    "refused\n"
    "where it arrives, naming the port and the axis.\n"
    "\n"
    "  --textproto   write an sd.v1.NodeKindCatalog in protobuf text format instead (for tools;\n"
    "                the graph fuzzer plans against it)\n";

void PrintPorts(const char* title, const google::protobuf::RepeatedPtrField<v1::PortInfo>& ports) {
  for (const v1::PortInfo& p : ports) {
    std::string line = absl::StrCat("    ", title, " ", p.name(), ": ", DescribeType(p.type()),
                                    p.dims().empty() ? "" : absl::StrCat(" [", p.dims(), "]"),
                                    p.optional() ? " (optional)" : "");
    if (!p.doc().empty()) absl::StrAppend(&line, " - ", p.doc());
    std::printf("%s\n", line.c_str());
  }
}

void PrintKind(const v1::NodeKindInfo& k) {
  std::printf("%s%s\n", k.name().c_str(), k.needs_model() ? "  [computes with the model]" : "");
  if (!k.doc().empty()) std::printf("    %s\n", k.doc().c_str());
  PrintPorts("in ", k.input());
  PrintPorts("out", k.output());
  if (!k.options_type().empty()) std::printf("    options: %s\n", k.options_type().c_str());
}

}  // namespace

int KindsCommand(const std::vector<std::string>& argv) {
  int code = kExitOk;
  auto args = ParseCommandLine("kinds", argv, {{}, {"textproto"}}, kHelp, &code);
  if (!args) return code;
  StockNodeKinds();  // links the stock kinds
#ifdef SD_HAVE_OIIO
  ImageNodeKinds();  // and the image-file kinds (LoadImage, LoadImageMask, SaveImage, ...)
#endif
  auto catalog = KindCatalog(args->positionals());
  if (!catalog.ok()) {
    Fail("kinds", catalog.status());
    return kExitUsage;
  }
  if (args->Has("textproto")) {
    std::string text;
    google::protobuf::TextFormat::PrintToString(*catalog, &text);
    std::fputs(text.c_str(), stdout);
    return kExitOk;
  }
  for (int i = 0; i < catalog->kind_size(); ++i) {
    if (i > 0) std::printf("\n");
    PrintKind(catalog->kind(i));
  }
  return kExitOk;
}

}  // namespace sd::cli

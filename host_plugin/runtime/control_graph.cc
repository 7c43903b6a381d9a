#include "host_plugin/runtime/control_graph.h"

#include <google/protobuf/text_format.h>

#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "proto/sd/v1/graph.pb.h"
#include "proto/sd/v1/nodes.pb.h"

namespace sd {
namespace {

// The graph inputs each added ControlNet gets its own copy of.
constexpr const char* kPerControlInputs[] = {"hint", "hint_values", "control_strength",
                                             "control_start", "control_end"};

// Rewrites "PORT=@NAME" inputs to "PORT=@NAME_K" for the per-ControlNet inputs (K > 0), and
// "PORT=SOURCE" to "PORT=renamed" by `sources`.
void Rename(v1::Node& node, int k, const std::map<std::string, std::string>& sources) {
  for (std::string& in : *node.mutable_input()) {
    const size_t eq = in.find('=');
    if (eq == std::string::npos) continue;
    const std::string port = in.substr(0, eq), source = in.substr(eq + 1);
    for (const char* name : kPerControlInputs) {
      if (k > 0 && source == absl::StrCat("@", name)) in = absl::StrCat(port, "=@", name, "_", k);
    }
    if (auto it = sources.find(source); it != sources.end())
      in = absl::StrCat(port, "=", it->second);
  }
}

}  // namespace

absl::StatusOr<std::string> AddControlNets(const std::string& graph_text, int extra) {
  v1::GraphConfig g;
  if (!google::protobuf::TextFormat::ParseFromString(graph_text, &g)) {
    return absl::InvalidArgumentError("AddControlNets: the graph does not parse");
  }
  if (extra <= 0) return graph_text;
  int hint = -1;
  for (int i = 0; i < g.node_size(); ++i) {
    if (g.node(i).kind() == "ControlHint" && g.node(i).name() == "hint") hint = i;
  }
  if (hint < 0)
    return absl::InvalidArgumentError(
        "AddControlNets: the graph has no ControlHint node named 'hint'");
  const v1::GraphConfig original = g;
  bool any = false;
  for (int k = 1; k <= extra; ++k) {
    for (const v1::GraphInput& in : original.input()) {
      for (const char* name : kPerControlInputs) {
        if (in.name() != name) continue;
        v1::GraphInput* copy = g.add_input();
        *copy = in;
        copy->set_name(absl::StrCat(name, "_", k));
        copy->set_doc(absl::StrCat(in.doc(), " (ControlNet ", k, ")"));
      }
    }
    v1::Node* h = g.add_node();
    *h = original.node(hint);
    h->set_name(absl::StrCat("hint_", k));
    Rename(*h, k, {});
  }
  for (v1::Loop& loop : *g.mutable_loop()) {
    const v1::Loop body = loop;
    std::map<std::string, std::string> last;  // ControlNet chain head -> its last node
    for (const v1::Node& n : body.node()) {
      if (n.kind() != "ControlNet") continue;
      any = true;
      std::string previous = n.name();
      for (int k = 1; k <= extra; ++k) {
        v1::Node* c = loop.add_node();
        *c = n;
        c->set_name(absl::StrCat(n.name(), "_", k));
        Rename(*c, k, {{"hint.hint", absl::StrCat("hint_", k, ".hint")}});
        c->add_input(absl::StrCat("residuals=", previous, ".residuals"));
        v1::ControlNetOptions o;
        o.set_index(k);
        c->mutable_options()->PackFrom(o);
        previous = c->name();
      }
      last[absl::StrCat(n.name(), ".residuals")] = absl::StrCat(previous, ".residuals");
    }
    for (v1::Node& n : *loop.mutable_node()) {  // the UNet steps (or the guided_eps using them)
      if (n.kind() != "ControlNet") Rename(n, 0, last);
    }
  }
  if (!any)
    return absl::InvalidArgumentError("AddControlNets: the graph's loops have no ControlNet node");
  std::string out;
  google::protobuf::TextFormat::Printer printer;
  printer.SetExpandAny(true);
  printer.PrintToString(g, &out);
  return out;
}

}  // namespace sd

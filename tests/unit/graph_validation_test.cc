// Graph validation: broken graphs are rejected before any model loads, with the code and a message that
// names the file, line, node and port.
#include <gmock/gmock.h>
#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include "host_plugin/runtime/graph.h"
#include "host_plugin/runtime/graph_plan.h"
#include "host_plugin/runtime/stock_graphs.h"
#include "nodes/base/file_util.h"
#include "nodes/ops/model_cache.h"

namespace sd {
namespace {

using ::testing::HasSubstr;

constexpr char kHeader[] = R"(
input { name: "prompt" type { kind: STRING } default_value { s: "" } }
input { name: "steps" type { kind: INT } default_value { i: 5 } }
)";

struct Case {
  const char* name;
  std::string body;
  const char* expect;
};

TEST(GraphValidationTest, BrokenGraphsAreRejectedWithTheirReason) {
  const std::string ok_nodes = R"(
node { kind: "Tokenize" name: "tok" input: "text=@prompt" }
node { kind: "ClipEncode" name: "clip" input: "tokens=tok.tokens" }
output { name: "ctx" source: "clip.context" }
)";
  ASSERT_TRUE(Graph::FromText(std::string(kHeader) + ok_nodes, "ok.pbtxt").ok());
  const std::string loop_ok = R"(
node { kind: "Schedule" name: "schedule" input: "steps=@steps" }
node { kind: "Noise" name: "n" input: "seed=@steps" input: "height=@steps" input: "width=@steps" }
node { kind: "Tokenize" name: "tok" input: "text=@prompt" }
node { kind: "ClipEncode" name: "clip" input: "tokens=tok.tokens" }
)";
  const std::vector<Case> cases = {
      {"unknown kind", R"(node { kind: "Frobnicate" name: "f" } output { name: "o" source: "f.x" })",
       "node 'f': unknown node kind 'Frobnicate' (known: "},
      {"duplicate name", R"(node { kind: "Tokenize" name: "t" input: "text=@prompt" }
node { kind: "Tokenize" name: "t" input: "text=@prompt" } output { name: "o" source: "t.tokens" })",
       "the name 't' is used twice"},
      {"dangling edge", R"(node { kind: "ClipEncode" name: "clip" input: "tokens=nowhere.tokens" }
output { name: "o" source: "clip.context" })",
       "node 'clip' input 'tokens': 'nowhere.tokens' names no node, loop or graph input (dangling edge)"},
      {"unknown output port", R"(node { kind: "Tokenize" name: "tok" input: "text=@prompt" }
node { kind: "ClipEncode" name: "clip" input: "tokens=tok.ids" } output { name: "o" source: "clip.context" })",
       "node 'tok' (Tokenize) has no output 'ids' (outputs: tokens)"},
      {"unknown input port", R"(node { kind: "Tokenize" name: "tok" input: "txt=@prompt" } output { name: "o" source: "tok.tokens" })",
       "Tokenize has no input 'txt' (inputs: text)"},
      {"missing required input", R"(node { kind: "ClipEncode" name: "clip" } output { name: "o" source: "clip.context" })",
       "node 'clip': required input 'tokens' (int64 tensor of rank 2) is not wired"},
      {"mistyped edge", R"(node { kind: "ClipEncode" name: "clip" input: "tokens=@prompt" } output { name: "o" source: "clip.context" })",
       "node 'clip' input 'tokens': expected int64 tensor of rank 2, but '@prompt' is string"},
      {"rank mismatch", R"(node { kind: "Tokenize" name: "tok" input: "text=@prompt" }
node { kind: "ClipEncode" name: "clip" input: "tokens=tok.tokens" }
node { kind: "ClipEncode" name: "clip2" input: "tokens=clip.context" } output { name: "o" source: "clip2.context" })",
       "node 'clip2' input 'tokens': expected int64 tensor of rank 2, but 'clip.context' is float32 tensor of rank 3"},
      {"cycle outside a loop", R"(node { kind: "CfgCombine" name: "a" input: "cond=b.eps" input: "uncond=b.eps" input: "scale=@steps" }
node { kind: "CfgCombine" name: "b" input: "cond=a.eps" input: "uncond=a.eps" input: "scale=@steps" }
output { name: "o" source: "a.eps" })",
       "cycle outside a loop among: a, b"},
      {"unknown graph input", R"(node { kind: "Tokenize" name: "tok" input: "text=@negative" } output { name: "o" source: "tok.tokens" })",
       "node 'tok' input 'text': no graph input 'negative'"},
      {"loop variable outside a loop", R"(node { kind: "Schedule" name: "s" input: "steps=@loop.t" } output { name: "o" source: "s.first" })",
       "'@loop.t' is only visible inside a loop body"},
      {"body node read from outside", loop_ok + R"(
loop { name: "L" timesteps: "schedule.timesteps" carry { name: "x" init: "n.noise" next: "u.eps" }
  node { kind: "UNetStep" name: "u" input: "latents=@loop.x" input: "t=@loop.t" input: "context=clip.context" } }
node { kind: "VaeDecode" name: "d" input: "latents=u.eps" } output { name: "o" source: "d.image" })",
       "'u.eps' is inside loop 'L'; outside it only the loop's carried values are visible"},
      {"loop without timesteps", loop_ok + R"(
loop { name: "L" carry { name: "x" init: "n.noise" next: "u.eps" }
  node { kind: "UNetStep" name: "u" input: "latents=@loop.x" input: "t=@loop.t" input: "context=clip.context" } }
output { name: "o" source: "L.x" })",
       "loop 'L': needs timesteps"},
      {"carry next outside the body", loop_ok + R"(
loop { name: "L" timesteps: "schedule.timesteps" carry { name: "x" init: "n.noise" next: "n.noise" }
  node { kind: "UNetStep" name: "u" input: "latents=@loop.x" input: "t=@loop.t" input: "context=clip.context" } }
output { name: "o" source: "L.x" })",
       "'n.noise' must be an output of a body node"},
      {"cycle in a loop body", loop_ok + R"(
loop { name: "L" timesteps: "schedule.timesteps" carry { name: "x" init: "n.noise" next: "a.eps" }
  node { kind: "CfgCombine" name: "a" input: "cond=b.eps" input: "uncond=@loop.x" input: "scale=@steps" }
  node { kind: "CfgCombine" name: "b" input: "cond=a.eps" input: "uncond=@loop.x" input: "scale=@steps" } }
output { name: "o" source: "L.x" })",
       "cycle in the body among: a, b"},
      {"unknown carried value", loop_ok + R"(
loop { name: "L" timesteps: "schedule.timesteps" carry { name: "x" init: "n.noise" next: "u.eps" }
  node { kind: "UNetStep" name: "u" input: "latents=@loop.y" input: "t=@loop.t" input: "context=clip.context" } }
output { name: "o" source: "L.x" })",
       "loop 'L' has no carried value 'y'"},
      {"timesteps of the wrong type", loop_ok + R"(
loop { name: "L" timesteps: "clip.context" carry { name: "x" init: "n.noise" next: "u.eps" }
  node { kind: "UNetStep" name: "u" input: "latents=@loop.x" input: "t=@loop.t" input: "context=clip.context" } }
output { name: "o" source: "L.x" })",
       "expected an int64 or float32 tensor of rank 1"},
      {"wrong options type", R"(node { kind: "Schedule" name: "s" input: "steps=@steps"
  options { [type.googleapis.com/sd.v1.NoiseOptions] { offset: 1 } } } output { name: "o" source: "s.first" })",
       "options must be sd.v1.ScheduleOptions, got sd.v1.NoiseOptions"},
      {"options on a kind without options", R"(node { kind: "Tokenize" name: "tok" input: "text=@prompt" }
node { kind: "ClipEncode" name: "c" input: "tokens=tok.tokens" options { [type.googleapis.com/sd.v1.NoiseOptions] {} } }
output { name: "o" source: "c.context" })",
       "ClipEncode takes no options"},
      {"input not PORT=SOURCE", R"(node { kind: "Tokenize" name: "tok" input: "@prompt" } output { name: "o" source: "tok.tokens" })",
       "input '@prompt' is not PORT=SOURCE"},
      {"input wired twice", R"(node { kind: "Tokenize" name: "tok" input: "text=@prompt" input: "text=@prompt" }
output { name: "o" source: "tok.tokens" })",
       "input 'text' is wired twice"},
      {"no outputs", R"(node { kind: "Tokenize" name: "tok" input: "text=@prompt" })", "the graph has no outputs"},
      {"dangling output", R"(node { kind: "Tokenize" name: "tok" input: "text=@prompt" } output { name: "o" source: "tok.nothing" })",
       "output 'o': node 'tok' (Tokenize) has no output 'nothing'"},
      {"duplicate graph input", R"(input { name: "prompt" type { kind: STRING } } node { kind: "Tokenize" name: "tok" input: "text=@prompt" }
output { name: "o" source: "tok.tokens" })",
       "graph input 'prompt' is declared twice"},
      {"syntax error", R"(node { kind: "Tokenize" name: "tok" input: "text=@prompt" )", "Expected identifier"},
      {"bad node name", R"(node { kind: "Tokenize" name: "a.b" input: "text=@prompt" } output { name: "o" source: "a.b.tokens" })",
       "a node needs a name without '.'"},
  };
  ASSERT_GE(cases.size(), 15u);
  for (const Case& c : cases) {
    auto g = Graph::FromText(std::string(kHeader) + c.body, "broken.pbtxt");
    ASSERT_FALSE(g.ok()) << c.name << " was accepted";
    EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument) << c.name << ": " << g.status();
    EXPECT_THAT(std::string(g.status().message()), HasSubstr(c.expect)) << c.name;
    EXPECT_THAT(std::string(g.status().message()), HasSubstr("graph broken.pbtxt")) << c.name;
  }
}

TEST(GraphValidationTest, ErrorsNameTheLine) {
  auto g = Graph::FromText(std::string(kHeader) + "\n\nnode { kind: \"ClipEncode\" name: \"clip\" }\noutput { name: \"o\" source: \"clip.context\" }",
                           "lines.pbtxt");
  ASSERT_FALSE(g.ok());
  EXPECT_THAT(std::string(g.status().message()), HasSubstr("graph lines.pbtxt:6: node 'clip'"));
}

TEST(GraphValidationTest, StockGraphsValidateAndEveryStockKindIsRegistered) {
  const std::vector<std::string> kinds = StockNodeKinds();
  EXPECT_EQ(kinds.size(), 38u);
  for (const std::string& k : kinds) EXPECT_TRUE(NodeRegistry::Get().Find(k).ok()) << k;
  for (const char* graph :
       {"txt2img.pbtxt", "txt2img_nocfg.pbtxt", "img2img.pbtxt", "inpaint.pbtxt", "inpaint9.pbtxt",
        "hires_fix.pbtxt", "txt2img_controlnet.pbtxt", "img2img_controlnet.pbtxt"}) {
    auto g = Graph::Load(std::string(SD_TEST_GRAPHS_DIR) + "/" + graph);
    EXPECT_TRUE(g.ok()) << graph << ": " << g.status();
  }
}

// The contracts as data (what `sd-graph kinds --textproto` writes and the graph fuzzer plans
// against) come back through text equal to the kinds' own, and plan every stock graph.
// One choice of stock graph for every front end (the CLI and the GEGL operations ask the same
// function), and every graph it names loads.
TEST(GraphValidationTest, TheStockGraphForEachRequest) {
  const std::vector<std::pair<StockRequest, std::string>> cases = {
      {{"txt2img"}, "txt2img.pbtxt"},
      {{"txt2img", true}, "txt2img_controlnet.pbtxt"},
      {{"txt2img", false, true}, "hires_fix.pbtxt"},
      {{"img2img"}, "img2img.pbtxt"},
      {{"img2img", true}, "img2img_controlnet.pbtxt"},
      {{"inpaint"}, "inpaint.pbtxt"},
      {{"inpaint", false, false, 9}, "inpaint9.pbtxt"},
  };
  for (const auto& [request, file] : cases) {
    auto chosen = StockGraphFor(request);
    ASSERT_TRUE(chosen.ok()) << chosen.status();
    EXPECT_EQ(*chosen, file);
    auto g = Graph::Load(StockGraphPath(*chosen, ""));
    EXPECT_TRUE(g.ok()) << g.status();
  }
  for (const StockRequest& bad :
       {StockRequest{"txt2img", true, true}, StockRequest{"inpaint", true},
        StockRequest{"img2img", false, true}, StockRequest{"upscale"}}) {
    auto chosen = StockGraphFor(bad);
    EXPECT_EQ(chosen.status().code(), absl::StatusCode::kInvalidArgument) << bad.mode;
  }
}

TEST(GraphValidationTest, ContractsAsDataRoundTripAndPlanTheStockGraphs) {
  StockNodeKinds();
  auto catalog = KindCatalog({});
  ASSERT_TRUE(catalog.ok()) << catalog.status();
  EXPECT_EQ(static_cast<size_t>(catalog->kind_size()), NodeRegistry::Get().Names().size());
  EXPECT_EQ(KindCatalog({"Noise", "NoSuchKind"}).status().code(), absl::StatusCode::kNotFound);
  std::string text;
  ASSERT_TRUE(google::protobuf::TextFormat::PrintToString(*catalog, &text));
  v1::NodeKindCatalog back;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &back));
  ASSERT_EQ(back.kind_size(), catalog->kind_size());
  std::map<std::string, NodeContract> contracts;
  auto same_ports = [](const std::vector<PortSpec>& a, const std::vector<PortSpec>& b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
      if (a[i].name != b[i].name || a[i].optional != b[i].optional || a[i].doc != b[i].doc ||
          a[i].type.SerializeAsString() != b[i].type.SerializeAsString())
        return false;
    }
    return true;
  };
  for (const v1::NodeKindInfo& info : back.kind()) {
    auto c = ContractFromInfo(info);
    ASSERT_TRUE(c.ok()) << c.status();
    const NodeContract own = (*NodeRegistry::Get().Find(info.name()))->contract();
    EXPECT_TRUE(same_ports(c->inputs, own.inputs)) << info.name();
    EXPECT_TRUE(same_ports(c->outputs, own.outputs)) << info.name();
    EXPECT_EQ(c->options, own.options) << info.name();
    EXPECT_EQ(c->needs_model, own.needs_model) << info.name();
    EXPECT_EQ(c->doc, own.doc) << info.name();
    contracts[info.name()] = *c;
  }
  auto lookup = [&](const std::string& kind) -> absl::StatusOr<NodeContract> {
    auto it = contracts.find(kind);
    if (it == contracts.end()) return absl::NotFoundError("unknown node kind '" + kind + "'");
    return it->second;
  };
  for (const char* graph :
       {"txt2img.pbtxt", "txt2img_nocfg.pbtxt", "img2img.pbtxt", "inpaint.pbtxt", "inpaint9.pbtxt",
        "hires_fix.pbtxt", "txt2img_controlnet.pbtxt", "img2img_controlnet.pbtxt"}) {
    auto file = ReadWholeFile(std::string(SD_TEST_GRAPHS_DIR) + "/" + graph, "graph");
    ASSERT_TRUE(file.ok()) << file.status();
    auto parsed = ParseGraph(*file, graph, lookup, FileImports());
    ASSERT_TRUE(parsed.ok()) << graph << ": " << parsed.status();
    EXPECT_EQ(parsed->plan->order.size(), parsed->plan->nodes.size() + parsed->plan->loops.size());
  }
  v1::NodeKindInfo unknown = back.kind(0);
  unknown.set_options_type("sd.v1.NoSuchOptions");
  EXPECT_EQ(ContractFromInfo(unknown).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GraphValidationTest, RunRefusesMissingAndMistypedInputsBeforeLoadingModels) {
  auto g = Graph::Load(std::string(SD_TEST_GRAPHS_DIR) + "/img2img.pbtxt");
  ASSERT_TRUE(g.ok());
  RunContext ctx;
  ctx.checkpoint = "/nonexistent/model.safetensors";
  ctx.models = std::make_shared<ModelCache>();
  auto r = g->Run({}, ctx);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("required input 'init' (uint8 tensor of rank 3) is not set"));
  r = g->Run({{"init", torch::zeros({8, 8, 3}, torch::kUInt8)}, {"steps", std::string("five")}}, ctx);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("input 'steps': expected int, got string"));
  EXPECT_THAT(std::string(g->ParseInputValue("steps", "five").status().message()), HasSubstr("'five' is not an integer"));
  EXPECT_THAT(std::string(g->ParseInputValue("nope", "1").status().message()), HasSubstr("has no input 'nope'"));
  // Valid inputs but a missing model: the error names the node that needed it and the file.
  r = g->Run({{"init", torch::zeros({8, 8, 3}, torch::kUInt8)}}, ctx);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("/nonexistent/model.safetensors"));
}

}  // namespace
}  // namespace sd

// Subgraphs, imports and literal inputs: a graph that uses a subgraph computes what the same nodes
// written out compute (in a loop, around a loop, nested, with defaults and literals), and every
// mistake in a subgraph, its use or an import is refused with the file and line at fault and the
// chain of nodes that led there. Model-free kinds only (Noise, Schedule, CfgCombine): no weights.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <set>

#include "host_plugin/runtime/graph.h"
#include "nodes/base/status_macros.h"
#include "nodes/ops/model_cache.h"
#include "tests/test_util.h"

namespace sd {
namespace {

using ::testing::HasSubstr;
using testing::TempDir;

// mix(seed, scale = 2): draws 0 and 1 of `seed`, combined as CFG does.
constexpr char kMix[] = R"(
subgraph {
  name: "mix"
  input { name: "seed"  type { kind: INT } }
  input { name: "scale" type { kind: FLOAT } default_value { f: 2 } }
  node { kind: "Noise" name: "a" input: "seed=@seed" input: "height=#64" input: "width=#64" }
  node { kind: "Noise" name: "b" input: "seed=@seed" input: "height=#64" input: "width=#64" input: "offset=#1" }
  node { kind: "CfgCombine" name: "cfg" input: "cond=a.noise" input: "uncond=b.noise" input: "scale=@scale" }
  output { name: "eps" source: "cfg.eps" }
}
)";

absl::StatusOr<std::map<std::string, Value>> RunText(
    const std::string& text, const std::map<std::string, Value>& inputs = {},
    const std::vector<std::string>& capture = {}) {
  SD_ASSIGN_OR_RETURN(Graph g, Graph::FromText(text, "test.pbtxt"));
  RunContext ctx;
  ctx.models = std::make_shared<ModelCache>();
  RunOptions options;
  options.capture = capture;
  return g.Run(inputs, ctx, options);
}

torch::Tensor TensorOf(const absl::StatusOr<std::map<std::string, Value>>& out,
                       const std::string& name) {
  EXPECT_TRUE(out.ok()) << out.status();
  if (!out.ok()) return torch::Tensor();
  return std::get<torch::Tensor>(out->at(name));
}

TEST(SubgraphTest, ASubgraphComputesWhatItsNodesWrittenOutCompute) {
  const std::string used = std::string(kMix) + R"(
input { name: "seed" type { kind: INT } default_value { i: 3 } }
node { kind: "mix" name: "x" input: "seed=@seed" }
node { kind: "mix" name: "y" input: "seed=@seed" input: "scale=#0.5" }
node { kind: "CfgCombine" name: "out" input: "cond=x.eps" input: "uncond=y.eps" input: "scale=#1.5" }
output { name: "eps" source: "out.eps" }
)";
  const std::string written_out = R"(
input { name: "seed" type { kind: INT } default_value { i: 3 } }
input { name: "x_scale" type { kind: FLOAT } default_value { f: 2 } }
input { name: "size" type { kind: INT } default_value { i: 64 } }
input { name: "one" type { kind: INT } default_value { i: 1 } }
input { name: "half" type { kind: FLOAT } default_value { f: 0.5 } }
input { name: "out_scale" type { kind: FLOAT } default_value { f: 1.5 } }
node { kind: "Noise" name: "xa" input: "seed=@seed" input: "height=@size" input: "width=@size" }
node { kind: "Noise" name: "xb" input: "seed=@seed" input: "height=@size" input: "width=@size" input: "offset=@one" }
node { kind: "CfgCombine" name: "x" input: "cond=xa.noise" input: "uncond=xb.noise" input: "scale=@x_scale" }
node { kind: "CfgCombine" name: "y" input: "cond=xa.noise" input: "uncond=xb.noise" input: "scale=@half" }
node { kind: "CfgCombine" name: "out" input: "cond=x.eps" input: "uncond=y.eps" input: "scale=@out_scale" }
output { name: "eps" source: "out.eps" }
)";
  const torch::Tensor want = TensorOf(RunText(written_out), "eps");
  auto got = RunText(used, {}, {"x.eps", "x/a.noise"});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(torch::equal(TensorOf(got, "eps"), want));
  // The using node's outputs and the subgraph's own nodes can be captured by name.
  EXPECT_EQ(TensorOf(got, "x.eps").sizes(), want.sizes());
  EXPECT_EQ(TensorOf(got, "x/a.noise").sizes(), want.sizes());
  // A default is a graph input of its own ("x/scale"), so it can still be set.
  auto g = Graph::FromText(used, "test.pbtxt");
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_NE(g->Input("x/scale"), nullptr);
  EXPECT_EQ(g->Input("x/scale")->default_value().f(), 2);
  EXPECT_EQ(g->Input("y/scale")->default_value().f(), 0.5);  // the literal
  EXPECT_TRUE(torch::equal(TensorOf(RunText(used, {{"x/scale", 4.0}}), "eps"),
                           TensorOf(RunText(written_out, {{"x_scale", 4.0}}), "eps")));
}

// walk(start, toward, steps): a loop of `steps` halvings of the distance, each step the `half`
// subgraph (used inside the loop); x_n = toward + (start - toward) / 2^n.
TEST(SubgraphTest, LoopsInsideSubgraphsAndSubgraphsInsideLoops) {
  const std::string text = R"(
subgraph {
  name: "half"
  input { name: "a" type { kind: TENSOR dtype: FLOAT32 rank: 4 } }
  input { name: "b" type { kind: TENSOR dtype: FLOAT32 rank: 4 } }
  node { kind: "CfgCombine" name: "c" input: "cond=@a" input: "uncond=@b" input: "scale=#0.5" }
  output { name: "mid" source: "c.eps" }
}
subgraph {
  name: "walk"
  input { name: "start"  type { kind: TENSOR dtype: FLOAT32 rank: 4 } }
  input { name: "toward" type { kind: TENSOR dtype: FLOAT32 rank: 4 } }
  input { name: "steps"  type { kind: INT } }
  node { kind: "Schedule" name: "s" input: "steps=@steps" }
  loop {
    name: "L" timesteps: "s.timesteps"
    carry { name: "x" init: "@start" next: "step.mid" }
    node { kind: "half" name: "step" input: "a=@loop.x" input: "b=@toward" }
  }
  output { name: "end" source: "L.x" }
}
input { name: "steps" type { kind: INT } default_value { i: 4 } }
node { kind: "Noise" name: "a" input: "seed=#1" input: "height=#32" input: "width=#32" }
node { kind: "Noise" name: "b" input: "seed=#2" input: "height=#32" input: "width=#32" }
node { kind: "walk" name: "w" input: "start=a.noise" input: "toward=b.noise" input: "steps=@steps" }
output { name: "end" source: "w.end" }
)";
  auto out = RunText(text, {}, {"a.noise", "b.noise"});
  const torch::Tensor a = TensorOf(out, "a.noise"), b = TensorOf(out, "b.noise");
  const torch::Tensor want = b + (a - b) / 16;
  EXPECT_LT((TensorOf(out, "end") - want).abs().max().item<float>(), 1e-6);
  auto g = Graph::FromText(text, "test.pbtxt");
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_EQ(g->config().loop_size(), 1);
  EXPECT_EQ(g->config().loop(0).name(), "w/L");
  EXPECT_EQ(g->config().loop(0).node(0).name(), "w/step/c");
}

// The stock graphs share the library's subgraphs: the CFG halves are still two UNet nodes.
TEST(SubgraphTest, StockGraphsUseTheLibrarysSubgraphs) {
  auto g = Graph::Load(std::string(SD_TEST_GRAPHS_DIR) + "/txt2img.pbtxt");
  ASSERT_TRUE(g.ok()) << g.status();
  std::set<std::string> names;
  for (const v1::Node& n : g->config().node()) names.insert(n.name());
  for (const v1::Loop& l : g->config().loop()) {
    names.insert(l.name());
    for (const v1::Node& n : l.node()) names.insert(n.name());
  }
  for (const char* n : {"prompts/clip_cond", "prompts/clip_uncond", "denoise/loop",
                        "denoise/eps/unet_cond", "denoise/eps/unet_uncond", "denoise/step"})
    EXPECT_TRUE(names.count(n)) << n;
  auto hires = Graph::Load(std::string(SD_TEST_GRAPHS_DIR) + "/hires_fix.pbtxt");
  ASSERT_TRUE(hires.ok()) << hires.status();
  EXPECT_EQ(hires->config().loop_size(), 2);
}

struct BadCase {
  const char* name;
  std::string text;
  const char* expect;
  const char* line;  // "FILE:LINE" the message must start with
};

TEST(SubgraphTest, MistakesAreRefusedWithTheirFileAndLine) {
  const std::string seed = R"(input { name: "seed" type { kind: INT } default_value { i: 3 } }
input { name: "prompt" type { kind: STRING } default_value { s: "" } }
)";
  // Subgraph `s` (its text) after the graph inputs, used by node 'user' (with `wiring`) as the
  // output.
  auto used_by_user = [&](const std::string& subgraph, const std::string& wiring) {
    return subgraph + seed + "node { kind: \"s\" name: \"user\"" + wiring +
           " }\noutput { name: \"o\" source: \"user.o\" }";
  };
  const std::vector<BadCase> cases = {
      {"unknown input",
       std::string(kMix) + seed +
           "node { kind: \"mix\" name: \"x\" input: \"seed=@seed\" input: \"zz=@seed\" }\n"
           "output { name: \"o\" source: \"x.eps\" }",
       "node 'x': subgraph 'mix' has no input 'zz' (inputs: seed, scale)", "bad.pbtxt:13"},
      {"required input",
       std::string(kMix) + seed +
           "node { kind: \"mix\" name: \"x\" }\noutput { name: \"o\" source: \"x.eps\" }",
       "required input 'seed' (int) of subgraph 'mix' is not wired", "bad.pbtxt:13"},
      {"mistyped input",
       std::string(kMix) + seed +
           "node { kind: \"mix\" name: \"x\" input: \"seed=@prompt\" }\n"
           "output { name: \"o\" source: \"x.eps\" }",
       "node 'x' input 'seed': the subgraph expects int, but '@prompt' is string", "bad.pbtxt:13"},
      {"unknown output",
       std::string(kMix) + seed +
           "node { kind: \"mix\" name: \"x\" input: \"seed=@seed\" }\n"
           "output { name: \"o\" source: \"x.nope\" }",
       "node 'x' (subgraph 'mix') has no output 'nope' (outputs: eps)", "bad.pbtxt:14"},
      {"bad literal",
       std::string(kMix) + seed +
           "node { kind: \"mix\" name: \"x\" input: \"seed=#three\" }\n"
           "output { name: \"o\" source: \"x.eps\" }",
       "'#three' is not a valid int", "bad.pbtxt:13"},
      {"error inside the subgraph",
       used_by_user(R"(
subgraph {
  name: "s"
  input { name: "seed" type { kind: INT } }
  node { kind: "Noise" name: "n" input: "seed=@seed" input: "like=@seed" }
  output { name: "o" source: "n.noise" }
}
)",
                    " input: \"seed=@seed\""),
       "node 'user/n' input 'like': expected float32 tensor of rank 4, but '@seed' is int (in "
       "subgraph "
       "'s' used by node 'user' at bad.pbtxt:10)",
       "bad.pbtxt:5"},
      {"reads outside itself",
       used_by_user(R"(
subgraph {
  name: "s"
  node { kind: "Noise" name: "n" input: "seed=outer.noise" }
  output { name: "o" source: "n.noise" }
}
)",
                    ""),
       "'outer.noise' is not in subgraph 's': a subgraph reads its inputs (@NAME) and its own "
       "nodes only "
       "(in subgraph 's' used by node 'user' at bad.pbtxt:9)",
       "bad.pbtxt:4"},
      {"loop value at its top level",
       used_by_user(R"(
subgraph {
  name: "s"
  node { kind: "Noise" name: "n" input: "seed=@loop.index" }
  output { name: "o" source: "n.noise" }
}
)",
                    ""),
       "'@loop.index' is visible only in a loop of subgraph 's''s own", "bad.pbtxt:4"},
      {"recursion", R"(
subgraph { name: "a" node { kind: "b" name: "inner" } output { name: "o" source: "inner.o" } }
subgraph { name: "b" node { kind: "a" name: "inner" } output { name: "o" source: "inner.o" } }
node { kind: "a" name: "top" }
output { name: "o" source: "top.o" }
)",
       "subgraph 'a' uses itself: a -> b -> a", "bad.pbtxt:3"},
      {"a loop in a loop", R"(
subgraph {
  name: "s"
  node { kind: "Schedule" name: "sch" input: "steps=#2" }
  loop { name: "L" timesteps: "sch.timesteps" carry { name: "x" init: "sch.first" next: "sch.first" } }
  output { name: "o" source: "L.x" }
}
input { name: "steps" type { kind: INT } default_value { i: 2 } }
node { kind: "Schedule" name: "sch" input: "steps=@steps" }
loop { name: "outer" timesteps: "sch.timesteps" carry { name: "x" init: "sch.first" next: "in.o" }
  node { kind: "s" name: "in" } }
output { name: "o" source: "outer.x" }
)",
       "subgraph 's' has a loop, and loop 'outer' can't hold another", "bad.pbtxt:11"},
      {"a kind's name", R"(subgraph { name: "Noise" output { name: "o" source: "@x" } }
output { name: "o" source: "@x" })",
       "subgraph 'Noise': a node kind has this name", "bad.pbtxt:1"},
      {"defined twice", std::string(kMix) + kMix + "output { name: \"o\" source: \"@x\" }",
       "subgraph 'mix': is defined twice (also at bad.pbtxt:2)", "bad.pbtxt:12"},
      {"a tensor literal", R"(
input { name: "seed" type { kind: INT } default_value { i: 3 } }
node { kind: "Noise" name: "n" input: "seed=@seed" input: "like=#3" }
output { name: "o" source: "n.noise" })",
       "node 'n' input 'like': a literal can't be a float32 tensor of rank 4", "bad.pbtxt:3"},
      {"a size bomb",
       [] {
         std::string t =
             R"(subgraph { name: "s0" node { kind: "Schedule" name: "n" input: "steps=#1" }
                                       output { name: "o" source: "n.first" } })";
         for (int level = 1; level <= 6; ++level) {
           t += "subgraph { name: \"s" + std::to_string(level) + "\"";
           for (int k = 0; k < 10; ++k)
             t += " node { kind: \"s" + std::to_string(level - 1) + "\" name: \"n" +
                  std::to_string(k) + "\" }";
           t += " output { name: \"o\" source: \"n0.o\" } }\n";
         }
         return t + "node { kind: \"s6\" name: \"top\" } output { name: \"o\" source: \"top.o\" }";
       }(),
       "more than 20000 nodes", "bad.pbtxt:"},
  };
  for (const BadCase& c : cases) {
    auto g = Graph::FromText(c.text, "bad.pbtxt");
    ASSERT_FALSE(g.ok()) << c.name << " was accepted";
    EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument)
        << c.name << ": " << g.status();
    EXPECT_THAT(std::string(g.status().message()), HasSubstr(c.expect)) << c.name;
    EXPECT_THAT(std::string(g.status().message()), HasSubstr(std::string("graph ") + c.line))
        << c.name << ": " << g.status();
  }
}

void Write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

TEST(SubgraphTest, ImportsComeFromBesideTheFileOrTheLibrary) {
  TempDir dir, lib;
  std::filesystem::create_directories(dir.File("sub"));
  Write(dir.File("sub/mix.pbtxt"), kMix);
  const std::string use = R"(
input { name: "seed" type { kind: INT } default_value { i: 3 } }
node { kind: "mix" name: "x" input: "seed=@seed" }
output { name: "o" source: "x.eps" }
)";
  Write(dir.File("main.pbtxt"), "import: \"sub/mix.pbtxt\"\n" + use);
  auto g = Graph::Load(dir.File("main.pbtxt"));
  ASSERT_TRUE(g.ok()) << g.status();
  // Not beside the file: the library's folders, in order.
  Write(lib.File("mix.pbtxt"), kMix);
  GraphImports imports = FileImports();
  imports.library.insert(imports.library.begin(), lib.path());
  auto parsed = ParseGraph("import: \"mix.pbtxt\"\n" + use, dir.File("other.pbtxt"),
                           RegisteredContract, imports);
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  // The stock library is found from anywhere.
  EXPECT_TRUE(
      Graph::FromText("import: \"sd.pbtxt\"\n" + use + std::string(kMix), "anywhere.pbtxt").ok());

  // Missing files, cycles and imported files that are more than a library.
  auto missing = Graph::FromText("\nimport: \"nowhere.pbtxt\"\n" + use, dir.File("m.pbtxt"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(
      std::string(missing.status().message()),
      HasSubstr(dir.File("m.pbtxt") + ":2: import 'nowhere.pbtxt': no such file (looked for " +
                dir.File("nowhere.pbtxt")));
  Write(dir.File("a.pbtxt"), "import: \"b.pbtxt\"\n");
  Write(dir.File("b.pbtxt"), "\n\nimport: \"a.pbtxt\"\n");
  auto cycle = Graph::Load(dir.File("a.pbtxt"));
  EXPECT_EQ(cycle.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      std::string(cycle.status().message()),
      HasSubstr(dir.File("b.pbtxt") + ":3: import 'a.pbtxt': import cycle: " + dir.File("a.pbtxt") +
                " -> " + dir.File("b.pbtxt") + " -> " + dir.File("a.pbtxt")));
  Write(dir.File("graph.pbtxt"), use);
  auto not_a_library = Graph::FromText("import: \"graph.pbtxt\"\n" + use, dir.File("c.pbtxt"));
  EXPECT_THAT(std::string(not_a_library.status().message()),
              HasSubstr("an imported file holds only imports and subgraphs"));
  auto not_a_file = Graph::FromText("import: \"sub\"\n" + use, dir.File("d.pbtxt"));
  EXPECT_THAT(std::string(not_a_file.status().message()), HasSubstr("is not a regular file"));
}

}  // namespace
}  // namespace sd

// Classifier-free guidance as one batch (v1::CfgBatch, host_plugin/runtime/cfg_batch.h): which
// UNetStep calls pair up, how their inputs join and their outputs split, and the stock txt2img
// graph on a tiny checkpoint giving the split calls' numbers (within 1e-5) from one batch-2 call
// per step.
#include "host_plugin/runtime/cfg_batch.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "host_plugin/runtime/graph.h"
#include "nodes/ops/model_cache.h"
#include "tests/tiny_checkpoint.h"

namespace sd {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::Pair;

// UNetStep nodes wired as `inputs` (port -> source), with the values a wave would gather for them.
struct Wave {
  std::vector<v1::Node> nodes;
  std::vector<PlannedNode> planned;
  std::vector<std::map<std::string, Value>> values;

  void Add(const std::string& name, std::vector<std::pair<std::string, std::string>> inputs,
           std::map<std::string, Value> values_in, const std::string& kind = "UNetStep") {
    v1::Node n;
    n.set_kind(kind);
    n.set_name(name);
    nodes.push_back(n);
    PlannedNode p;
    p.inputs = std::move(inputs);
    planned.push_back(p);
    values.push_back(std::move(values_in));
  }
  std::vector<std::pair<size_t, size_t>> Pairs(const std::string& remote = "") {
    std::vector<const PlannedNode*> wave;
    for (size_t i = 0; i < planned.size(); ++i) {
      planned[i].node = &nodes[i];  // the vectors no longer grow
      wave.push_back(&planned[i]);
    }
    return FindCfgPairs(wave, values,
                        [&](const PlannedNode& p) { return p.node->name() != remote; });
  }
};

std::map<std::string, Value> Call(const torch::Tensor& latents, const torch::Tensor& context) {
  return {{"latents", latents}, {"t", 981.0}, {"context", context}};
}

TEST(CfgBatchTest, HalvesPairWhenOnlyTheirContextsDiffer) {
  const torch::Tensor x = torch::randn({1, 4, 8, 8}), cond = torch::randn({1, 77, 32}),
                      uncond = torch::randn({1, 77, 32});
  auto wired = [](const std::string& context, const std::string& latents = "loop.latents") {
    return std::vector<std::pair<std::string, std::string>>{
        {"latents", latents}, {"t", "loop.t"}, {"context", context}};
  };
  {
    Wave w;  // the two halves of a guided step, and a third call that has no partner
    w.Add("cond", wired("p.cond"), Call(x, cond));
    w.Add("sampler", {}, {}, "SamplerStep");
    w.Add("uncond", wired("p.uncond"), Call(x, uncond));
    w.Add("other", wired("p.other"), Call(x, cond));
    EXPECT_THAT(w.Pairs(), ElementsAre(Pair(0u, 2u)));
    EXPECT_THAT(w.Pairs("cond"), ElementsAre(Pair(2u, 3u)));  // one half sent to a worker
  }
  {
    Wave w;  // other latents
    w.Add("cond", wired("p.cond"), Call(x, cond));
    w.Add("uncond", wired("p.uncond", "init.noise"), Call(x, uncond));
    EXPECT_THAT(w.Pairs(), IsEmpty());
  }
  {
    Wave w;  // contexts of different lengths (a long prompt against a short one)
    w.Add("cond", wired("p.cond"), Call(x, torch::randn({1, 154, 32})));
    w.Add("uncond", wired("p.uncond"), Call(x, uncond));
    EXPECT_THAT(w.Pairs(), IsEmpty());
  }
  {
    Wave w;  // ControlNet residuals: their layout has no batch axis to join along
    auto with_control = wired("p.cond");
    with_control.emplace_back("control", "cn.residuals");
    std::map<std::string, Value> values = Call(x, cond);
    values["control"] = torch::zeros({13, 16});
    w.Add("cond", with_control, values);
    auto uncond_control = wired("p.uncond");
    uncond_control.emplace_back("control", "cn.residuals");
    values["context"] = uncond;
    w.Add("uncond", uncond_control, values);
    EXPECT_THAT(w.Pairs(), IsEmpty());
  }
  {
    Wave w;  // a context batch that fits neither 1 nor the latents' batch stays with its own call
    w.Add("cond", wired("p.cond"), Call(torch::randn({2, 4, 8, 8}), torch::randn({3, 77, 32})));
    w.Add("uncond", wired("p.uncond"), Call(torch::randn({2, 4, 8, 8}), uncond));
    EXPECT_THAT(w.Pairs(), IsEmpty());
  }
}

TEST(CfgBatchTest, InputsJoinAlongTheBatchAndOutputsSplitBack) {
  const torch::Tensor x = torch::randn({2, 4, 8, 8});
  const torch::Tensor cond = torch::randn({1, 77, 32}), uncond = torch::randn({2, 77, 32});
  std::map<std::string, Value> a = Call(x, cond), b = Call(x, uncond);
  a["mask"] = b["mask"] = torch::rand({1, 1, 8, 8});  // batch 1: broadcast, kept
  a["masked_latents"] = b["masked_latents"] = torch::randn({2, 4, 8, 8});  // batch B: twice
  const std::map<std::string, Value> j = JoinCfgInputs(a, b);
  const torch::Tensor jx = std::get<torch::Tensor>(j.at("latents"));
  const torch::Tensor jc = std::get<torch::Tensor>(j.at("context"));
  ASSERT_EQ(jx.sizes(), (std::vector<int64_t>{4, 4, 8, 8}));
  EXPECT_TRUE(torch::equal(jx.slice(0, 0, 2), x) && torch::equal(jx.slice(0, 2, 4), x));
  ASSERT_EQ(jc.sizes(), (std::vector<int64_t>{4, 77, 32}));
  EXPECT_TRUE(torch::equal(jc.slice(0, 0, 2), cond.expand({2, 77, 32})));
  EXPECT_TRUE(torch::equal(jc.slice(0, 2, 4), uncond));
  EXPECT_EQ(std::get<torch::Tensor>(j.at("mask")).size(0), 1);
  EXPECT_EQ(std::get<torch::Tensor>(j.at("masked_latents")).size(0), 4);
  EXPECT_EQ(std::get<double>(j.at("t")), 981.0);

  const torch::Tensor eps = torch::randn({4, 4, 8, 8});
  auto halves = SplitCfgOutputs(NodeOutputs{{"eps", eps}}, a);
  ASSERT_TRUE(halves.ok()) << halves.status();
  EXPECT_TRUE(torch::equal(std::get<torch::Tensor>(halves->first.at("eps")), eps.slice(0, 0, 2)));
  EXPECT_TRUE(torch::equal(std::get<torch::Tensor>(halves->second.at("eps")), eps.slice(0, 2, 4)));
  auto wrong = SplitCfgOutputs(NodeOutputs{{"eps", torch::randn({3, 4, 8, 8})}}, a);
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(wrong.status().message()), ::testing::HasSubstr("output 'eps'"));
}

TEST(CfgBatchTest, AutoJoinsOnCudaOnlyAndTheRunOverridesTheGraph) {
  EXPECT_TRUE(JoinsCfgHalves(v1::CFG_BATCH_AUTO, torch::Device(torch::kCUDA, 0)));
  EXPECT_FALSE(JoinsCfgHalves(v1::CFG_BATCH_AUTO, torch::kCPU));
  EXPECT_TRUE(JoinsCfgHalves(v1::CFG_BATCH_ON, torch::kCPU));
  EXPECT_FALSE(JoinsCfgHalves(v1::CFG_BATCH_OFF, torch::Device(torch::kCUDA, 0)));
  EXPECT_EQ(CfgBatchSetting(v1::CFG_BATCH_AUTO, v1::CFG_BATCH_ON), v1::CFG_BATCH_ON);
  EXPECT_EQ(CfgBatchSetting(v1::CFG_BATCH_OFF, v1::CFG_BATCH_ON), v1::CFG_BATCH_OFF);
}

class CfgBatchRunTest : public testing::TinyCheckpointTest {
 protected:
  struct Result {
    torch::Tensor latents, eps_cond;
  };
  // The stock txt2img graph (with `header` before its text) on the tiny checkpoint, 64x64, one step
  // (so both ways see the same latents).
  static Result Txt2Img(const std::string& header, v1::CfgBatch run) {
    std::ifstream f(std::string(SD_TEST_GRAPHS_DIR) + "/txt2img.pbtxt");
    std::stringstream text;
    text << header << f.rdbuf();
    auto g = Graph::FromText(text.str(), std::string(SD_TEST_GRAPHS_DIR) + "/txt2img.pbtxt");
    EXPECT_TRUE(g.ok()) << g.status();
    if (!g.ok()) return {};
    RunContext ctx;
    ctx.checkpoint = TinyPath();
    ctx.tokenizer_dir = testing::TokenizerDir();
    ctx.models = std::make_shared<ModelCache>();
    RunOptions options;
    options.cfg_batch = run;
    options.capture = {"denoise.latents", "denoise/eps/unet_cond.eps"};
    auto out = g->Run({{"prompt", std::string("a red circle")},
                       {"negative", std::string("blurry")},
                       {"steps", int64_t{1}},
                       {"seed", int64_t{5}},
                       {"width", int64_t{64}},
                       {"height", int64_t{64}}},
                      ctx, options);
    EXPECT_TRUE(out.ok()) << out.status();
    if (!out.ok()) return {};
    return {std::get<torch::Tensor>(out->at("denoise.latents")),
            std::get<torch::Tensor>(out->at("denoise/eps/unet_cond.eps"))};
  }
  // A half computed in one batch-2 call is a view into that call's output: twice its own bytes.
  static bool FromOneBatch(const torch::Tensor& eps) {
    return eps.storage().nbytes() == static_cast<size_t>(2 * eps.numel()) * eps.element_size();
  }
};

TEST_F(CfgBatchRunTest, OneBatchPerStepGivesTheSplitCallsNumbers) {
  const Result split = Txt2Img("", v1::CFG_BATCH_OFF);
  const Result joined = Txt2Img("", v1::CFG_BATCH_ON);
  ASSERT_TRUE(split.latents.defined() && joined.latents.defined());
  EXPECT_FALSE(FromOneBatch(split.eps_cond));
  EXPECT_TRUE(FromOneBatch(joined.eps_cond));
  // One step: the UNet's answer within 1e-5 of the split calls' on the same inputs; the latents
  // carry it through DDPM's x0 estimate, which divides by sqrt(alpha_bar) (0.07 at t = 999):
  // within 1e-5 of their magnitude.
  const double scale = split.latents.abs().max().item<double>();
  std::printf("[ cfg batch ] eps %.2e, latents %.2e apart (latents up to %.2f)\n",
              (split.eps_cond - joined.eps_cond).abs().max().item<double>(),
              (split.latents - joined.latents).abs().max().item<double>(), scale);
  EXPECT_LE((split.eps_cond - joined.eps_cond).abs().max().item<double>(), 1e-5);
  EXPECT_LE((split.latents - joined.latents).abs().max().item<double>(), 1e-5 * (1 + scale));
  EXPECT_GT(scale, 0.1);  // something was computed

  // On a CPU, AUTO keeps the calls apart; the graph file can ask for one batch, and the run
  // overrides the graph.
  EXPECT_FALSE(FromOneBatch(Txt2Img("", v1::CFG_BATCH_AUTO).eps_cond));
  EXPECT_TRUE(FromOneBatch(Txt2Img("cfg_batch: CFG_BATCH_ON\n", v1::CFG_BATCH_AUTO).eps_cond));
  EXPECT_FALSE(FromOneBatch(Txt2Img("cfg_batch: CFG_BATCH_ON\n", v1::CFG_BATCH_OFF).eps_cond));
}

}  // namespace
}  // namespace sd

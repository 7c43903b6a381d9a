// Models as values in graphs: ApplyLora chains (model -> model) run before anything else, each
// node that computes with a model is opened (or its calls sent, or its loop sent) with the model
// on its `model` input, and a model that would only be known during the run is refused before
// anything runs. Fake model nodes report the model they were given; no weights are read.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "host_plugin/runtime/graph.h"
#include "nodes/base/status_macros.h"

namespace sd {
namespace {

using ::testing::HasSubstr;

// "TestModelUser" (needs a model: dispatched) outputs the model it was opened with.
struct ModelUser : NodeKernel {
  static constexpr Input<double> kX{"x"};
  static constexpr Output<std::string> kOpened{"opened"};
  static NodeContract Contract() {
    return {Ports(kX, kModelInput), Ports(kOpened), nullptr, "the model it was opened with",
            /*needs_model=*/true};
  }
  explicit ModelUser(const google::protobuf::Any&) {}
  absl::Status Open(RunContext& ctx) override {
    opened_ = ctx.checkpoint;
    return absl::OkStatus();
  }
  absl::Status Process(const NodeInputs&, NodeOutputs& out) override {
    out.Set(kOpened, opened_);
    return absl::OkStatus();
  }
  std::string opened_;
};
// "TestText" passes a string on: a value computed during the run.
struct TextKernel : NodeKernel {
  static constexpr Input<std::string> kIn{"in"};
  static constexpr Output<std::string> kText{"text"};
  static NodeContract Contract() { return {Ports(kIn), Ports(kText), nullptr, "text = in"}; }
  explicit TextKernel(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    out.Set(kText, in[kIn]);
    return absl::OkStatus();
  }
};
// "TestTwoSteps": timesteps [1, 0].
struct TwoSteps : NodeKernel {
  static constexpr Input<double> kX{"x"};
  static constexpr Output<torch::Tensor> kTimesteps{"timesteps", v1::INT64, "?"};
  static NodeContract Contract() { return {Ports(kX), Ports(kTimesteps), nullptr, "[1, 0]"}; }
  explicit TwoSteps(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs&, NodeOutputs& out) override {
    out.Set(kTimesteps, torch::tensor({1, 0}, torch::kInt64));
    return absl::OkStatus();
  }
};

template <typename K>
void Register(const char* name) {
  absl::Status s = NodeRegistry::Get().Register(
      NodeKind{name, [] { return K::Contract(); },
               [](const google::protobuf::Any& o) -> std::unique_ptr<NodeKernel> {
                 return std::make_unique<K>(o);
               }});
  ASSERT_TRUE(s.ok() || absl::IsAlreadyExists(s)) << s;
}

// Two LoRAs chained (the second by a literal, its UNet strength set), a third ApplyLora with no
// LoRA (passes the model on), then a VAE; one node computes with all of it, one with the run's
// model, and one in a loop with the LoRAs'.
constexpr char kGraph[] = R"(
input { name: "lora" type { kind: STRING } default_value { s: "style:0.5" } }
node { kind: "ApplyLora" name: "a" input: "lora=@lora" }
node { kind: "ApplyLora" name: "b" input: "model=a.model" input: "lora=#detail" input: "unet=#0.25" }
node { kind: "ApplyLora" name: "same" input: "model=b.model" }
node { kind: "ApplyVae" name: "vae" input: "model=same.model" input: "vae=#ft" }
node { kind: "TestModelUser" name: "with" input: "x=#1" input: "model=vae.model" }
node { kind: "TestModelUser" name: "without" input: "x=#1" }
node { kind: "TestTwoSteps" name: "steps" input: "x=#1" }
loop { name: "L" timesteps: "steps.timesteps" carry { name: "m" init: "@lora" next: "inner.opened" }
  node { kind: "TestModelUser" name: "inner" input: "x=@loop.t" input: "model=b.model" } }
output { name: "with" source: "with.opened" }
output { name: "without" source: "without.opened" }
output { name: "inner" source: "L.m" }
)";
constexpr char kChain[] =
    "base.safetensors|lora=loras/style.safetensors:0.5:0.5|lora=loras/detail.safetensors:0.25:1";
constexpr char kWith[] =
    "base.safetensors|vae=vaes/ft.safetensors|lora=loras/style.safetensors:0.5:0.5|lora=loras/"
    "detail.safetensors:0.25:1";

class ModelGraphTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Register<ModelUser>("TestModelUser");
    Register<TextKernel>("TestText");
    Register<TwoSteps>("TestTwoSteps");
    ctx_.checkpoint = "base.safetensors";
    ctx_.part_file = [](const std::string& part,
                        const std::string& name) -> absl::StatusOr<std::string> {
      if (name == "missing") return absl::NotFoundError("LoRA 'missing' not found");
      return part + "s/" + name + ".safetensors";
    };
  }
  RunContext ctx_;
};

TEST_F(ModelGraphTest, ModelChainsReachTheNodesThatNameThem) {
  auto g = Graph::FromText(kGraph, "models");
  ASSERT_TRUE(g.ok()) << g.status();
  auto out = g->Run({}, ctx_);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(std::get<std::string>(out->at("with")), kWith);
  EXPECT_EQ(std::get<std::string>(out->at("without")), "base.safetensors");
  EXPECT_EQ(std::get<std::string>(out->at("inner")), kChain);
  // An empty `lora`: the run's model everywhere.
  out = g->Run({{"lora", std::string()}}, ctx_);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(std::get<std::string>(out->at("with")),
            "base.safetensors|vae=vaes/ft.safetensors|lora=loras/detail.safetensors:0.25:1");
  // A worker opens what its repository names (RunContext::model_file).
  ctx_.model_file = [](const std::string& ref) -> absl::StatusOr<std::string> {
    return "/repo/" + ref;
  };
  out = g->Run({}, ctx_);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(std::get<std::string>(out->at("with")), std::string("/repo/") + kWith);
  EXPECT_EQ(std::get<std::string>(out->at("without")), "base.safetensors");
}

// Records the model of every call and loop it is sent; loops run here as a worker runs them.
class ModelRecorder : public NodeDispatcher {
 public:
  absl::StatusOr<NodeOutputs> Call(const NodeCall& call, const std::atomic<bool>*) override {
    std::lock_guard<std::mutex> lock(mu);
    models[call.node] = call.checkpoint;
    return NodeOutputs{{"opened", call.checkpoint}};
  }
  bool RunsGraphs() const override { return runs_graphs; }
  absl::StatusOr<std::map<std::string, Value>> RunGraph(const GraphCall& call,
                                                        const std::atomic<bool>*) override {
    models[call.loop] = call.checkpoint;
    SD_ASSIGN_OR_RETURN(Graph g, Graph::FromText(call.graph_text, "sent", RegisteredContract));
    RunContext ctx;
    ctx.checkpoint = call.checkpoint;
    return g.Run(call.inputs, ctx);
  }
  std::mutex mu;
  std::map<std::string, std::string> models;
  bool runs_graphs = false;
};

TEST_F(ModelGraphTest, DispatchedCallsAndLoopsCarryTheirNodesModels) {
  auto g = Graph::FromText(kGraph, "models");
  ASSERT_TRUE(g.ok()) << g.status();
  for (bool loops_on_worker : {false, true}) {
    SCOPED_TRACE(loops_on_worker);
    ModelRecorder workers;
    workers.runs_graphs = loops_on_worker;
    RunOptions options;
    options.dispatcher = &workers;
    options.placement = loops_on_worker ? v1::WORKER : v1::NODES;
    auto out = g->Run({}, ctx_, options);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(workers.models["with"], kWith);
    EXPECT_EQ(workers.models["without"], "base.safetensors");
    EXPECT_EQ(workers.models[loops_on_worker ? "L" : "inner"], kChain);
    EXPECT_EQ(std::get<std::string>(out->at("inner")), kChain);
  }
}

TEST_F(ModelGraphTest, ModelsKnownOnlyDuringTheRunAreRefusedBeforeAnythingRuns) {
  ModelRecorder workers;
  RunOptions options;
  options.dispatcher = &workers;
  const std::string head = R"(
input { name: "name" type { kind: STRING } default_value { s: "style" } }
node { kind: "TestText" name: "text" input: "in=@name" }
)";
  for (const std::string& body :
       {std::string(R"(node { kind: "ApplyLora" name: "a" input: "lora=text.text" }
node { kind: "TestModelUser" name: "u" input: "x=#1" input: "model=a.model" }
output { name: "o" source: "u.opened" })"),
        std::string(
            R"(node { kind: "TestModelUser" name: "u" input: "x=#1" input: "model=text.text" }
output { name: "o" source: "u.opened" })")}) {
    auto g = Graph::FromText(head + body, "late");
    ASSERT_TRUE(g.ok()) << g.status();
    auto out = g->Run({}, ctx_, options);
    ASSERT_FALSE(out.ok());
    EXPECT_EQ(out.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(out.status().message(), HasSubstr("'text.text' is computed during the run"));
    EXPECT_THAT(out.status().message(), HasSubstr("must be known before the run starts"));
    EXPECT_TRUE(workers.models.empty()) << "nothing may run first";
  }
}

TEST_F(ModelGraphTest, BadLorasAreErrorsNamingTheNode) {
  auto g = Graph::FromText(kGraph, "models");
  ASSERT_TRUE(g.ok()) << g.status();
  for (const auto& [lora, want] :
       {std::pair{"style:1:inf", "not finite"}, {"missing", "LoRA 'missing' not found"}}) {
    auto out = g->Run({{"lora", std::string(lora)}}, ctx_);
    ASSERT_FALSE(out.ok()) << lora;
    EXPECT_THAT(out.status().message(), HasSubstr("node 'a' (ApplyLora)"));
    EXPECT_THAT(out.status().message(), HasSubstr(want));
  }
}

}  // namespace
}  // namespace sd

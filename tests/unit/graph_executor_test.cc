// The graph executor with a fake dispatcher (no workers, no models): independent dispatched calls
// overlap, at most RunOptions::max_parallel_calls at once; cancellation stops a run in each state;
// an error from any node ends the run naming that node; with release_models each kernel closes
// after its last use. Synchronisation is explicit (a barrier the overlapping calls meet at); no
// test depends on timing.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <set>

#include "host_plugin/runtime/graph.h"
#include "host_plugin/runtime/loop_fragment.h"
#include "nodes/base/status_macros.h"

namespace sd {
namespace {

using ::testing::HasSubstr;

// "Remote" (needs a model: what dispatchers take) computes y = x + 1 when it runs in-process;
// "Local" y = a + b; "Steps" the timesteps 0..n-1. Local kernels count themselves.
std::atomic<int> g_local_kernels{0};

struct RemoteKernel : NodeKernel {
  static constexpr Input<double> kX{"x"};
  static constexpr Output<double> kY{"y"};
  static NodeContract Contract() {
    return {Ports(kX), Ports(kY), nullptr, "y = x + 1", /*needs_model=*/true};
  }
  explicit RemoteKernel(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    out.Set(kY, in[kX] + 1.0);
    return absl::OkStatus();
  }
};
struct LocalKernel : NodeKernel {
  static constexpr Input<double> kA{"a"};
  static constexpr Input<double> kB{"b"};
  static constexpr Output<double> kY{"y"};
  static NodeContract Contract() { return {Ports(kA, kB), Ports(kY), nullptr, "y = a + b"}; }
  explicit LocalKernel(const google::protobuf::Any&) { ++g_local_kernels; }
  ~LocalKernel() override { --g_local_kernels; }
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    out.Set(kY, in[kA] + in[kB]);
    return absl::OkStatus();
  }
};
struct StepsKernel : NodeKernel {
  static constexpr Input<int64_t> kN{"n"};
  static constexpr Output<torch::Tensor> kTimesteps{"timesteps", v1::INT64, "?"};
  static NodeContract Contract() { return {Ports(kN), Ports(kTimesteps), nullptr, "0..n-1"}; }
  explicit StepsKernel(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    out.Set(kTimesteps, torch::arange(in[kN], torch::kInt64));
    return absl::OkStatus();
  }
};

template <typename K>
void RegisterTestKind(const char* name, NodeContract contract) {
  absl::Status s = NodeRegistry::Get().Register(
      NodeKind{name, [contract] { return contract; },
               [](const google::protobuf::Any& o) -> std::unique_ptr<NodeKernel> {
                 return std::make_unique<K>(o);
               }});
  ASSERT_TRUE(s.ok() || absl::IsAlreadyExists(s)) << s;
}

// x = 1, three steps: pre = 2; each step v -> (v + 1) + (v + 1): 2 -> 6 -> 14 -> 30; post = 31.
constexpr char kGraph[] = R"(
input { name: "x" type { kind: FLOAT } default_value { f: 1 } }
input { name: "n" type { kind: INT } default_value { i: 3 } }
node { kind: "TestSteps" name: "steps" input: "n=@n" }
node { kind: "TestLocal" name: "pre" input: "a=@x" input: "b=@x" }
loop { name: "L" timesteps: "steps.timesteps" carry { name: "v" init: "pre.y" next: "sum.y" }
  node { kind: "TestRemote" name: "left" input: "x=@loop.v" }
  node { kind: "TestRemote" name: "right" input: "x=@loop.v" }
  node { kind: "TestLocal" name: "sum" input: "a=left.y" input: "b=right.y" } }
node { kind: "TestRemote" name: "post" input: "x=L.v" }
output { name: "out" source: "post.y" }
)";

// A dispatcher in the test's hands: computes what RemoteKernel computes, records every call, and
// can make calls meet at a barrier, fail, or raise the run's cancel flag.
class FakeDispatcher : public NodeDispatcher {
 public:
  absl::StatusOr<NodeOutputs> Call(const NodeCall& call,
                                   const std::atomic<bool>* cancelled) override {
    std::unique_lock<std::mutex> lock(mu_);
    calls.push_back(absl::StrCat(call.node, "@", call.step));
    ++in_flight_;
    max_in_flight = std::max(max_in_flight, in_flight_);
    struct Leave {
      FakeDispatcher* d;
      ~Leave() { --d->in_flight_; }
    } leave{this};
    if (barrier > 0) {
      // Overlap: wait for `barrier` calls to be inside at once (bounded: never hang a test).
      arrived_.notify_all();
      if (!arrived_.wait_for(lock, std::chrono::seconds(60),
                             [&] { return in_flight_ >= barrier || released_; }))
        return absl::DeadlineExceededError("the calls did not overlap");
      released_ = true;
      arrived_.notify_all();
    }
    if (call.node == fail_node && call.step == fail_step)
      return absl::ResourceExhaustedError("the worker ran out of memory");
    if (call.node == cancel_at_node && call.step == cancel_at_step) {
      cancel->store(true);
      if (wait_for_cancel) {
        // A call in flight polls the flag, as WorkerPool does, and gives up.
        while (!cancelled->load()) arrived_.wait_for(lock, std::chrono::milliseconds(1));
        return absl::CancelledError("cancelled while waiting for the worker");
      }
    }
    if (call.node == "left" && local_kernels_when_left < 0)
      local_kernels_when_left = g_local_kernels.load();
    return NodeOutputs{{"y", std::get<double>(call.inputs.at("x")) + 1.0}};
  }

  std::vector<std::string> calls;
  int max_in_flight = 0;
  int barrier = 0;
  std::string fail_node, cancel_at_node;
  int fail_step = -1, cancel_at_step = -1;
  bool wait_for_cancel = false;
  std::atomic<bool>* cancel = nullptr;
  int local_kernels_when_left = -1;

 private:
  std::mutex mu_;
  std::condition_variable arrived_;
  int in_flight_ = 0;
  bool released_ = false;
};

// A dispatcher that also runs whole loops (Placement WORKER) as a worker would: it parses the
// graph it is sent (no imports) and runs it in-process, relaying progress; it can fail, or raise
// the run's cancel flag at a step.
class FakeGraphRunner : public FakeDispatcher {
 public:
  bool RunsGraphs() const override { return true; }
  absl::StatusOr<std::map<std::string, Value>> RunGraph(
      const GraphCall& call, const std::atomic<bool>* cancelled) override {
    graphs.push_back(call.graph_text);
    loops.push_back(call.loop);
    steps = call.steps;
    if (!fail.empty()) return absl::InternalError(fail);
    auto g = Graph::FromText(call.graph_text, "sent", RegisteredContract);
    if (!g.ok()) return g.status();
    RunContext ctx;
    RunOptions o;
    o.cancelled = cancelled;
    o.capture = call.capture;
    o.on_progress = [&](const Progress& p) {
      if (p.step == cancel_at_step) cancel->store(true);
      call.on_progress(p);
    };
    auto out = g->Run(call.inputs, ctx, o);
    if (!out.ok()) return out.status();
    for (const auto& [name, type] : call.outputs) {
      if (!out->count(name)) return absl::InternalError("missing " + name);
    }
    return out;
  }
  std::vector<std::string> graphs, loops;
  int steps = 0;
  std::string fail;
  int cancel_at_step = -1;
};

// "TestDecode" stands for a VAE decoder (needs a model: dispatched): latents [B, C, h, w] in,
// image [B, 3, h*f, w*f] out. In-process it upsamples by 8; the dispatcher below answers with an
// image of whatever size the test asks for, as a faulty worker could.
struct DecodeKernel : NodeKernel {
  static constexpr Input<torch::Tensor> kLatents{"latents", v1::FLOAT32, "B,C,h,w"};
  static constexpr Input<torch::Tensor> kNoise{"noise", v1::FLOAT32, "B,C,h,w"};
  static constexpr Output<torch::Tensor> kImage{"image", v1::FLOAT32, "B,3,h*f,w*f"};
  static NodeContract Contract() {
    return {Ports(kLatents, kNoise), Ports(kImage), nullptr, "fake VAE decoder",
            /*needs_model=*/true};
  }
  explicit DecodeKernel(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    const torch::Tensor x = in[kLatents];
    out.Set(kImage, torch::zeros({x.size(0), 3, 8 * x.size(2), 8 * x.size(3)}));
    return absl::OkStatus();
  }
};

class ShapeDispatcher : public NodeDispatcher {
 public:
  explicit ShapeDispatcher(std::vector<int64_t> image) : image_(std::move(image)) {}
  absl::StatusOr<NodeOutputs> Call(const NodeCall&, const std::atomic<bool>*) override {
    ++calls;
    return NodeOutputs{{"image", torch::zeros(image_)}};
  }
  int calls = 0;

 private:
  std::vector<int64_t> image_;
};

class GraphExecutorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    RegisterTestKind<RemoteKernel>("TestRemote", RemoteKernel::Contract());
    RegisterTestKind<LocalKernel>("TestLocal", LocalKernel::Contract());
    RegisterTestKind<StepsKernel>("TestSteps", StepsKernel::Contract());
    RegisterTestKind<DecodeKernel>("TestDecode", DecodeKernel::Contract());
  }
  absl::StatusOr<double> Run(RunOptions options, std::map<std::string, Value> inputs = {},
                             const std::string& text = kGraph) {
    auto g = Graph::FromText(text, "executor_test.pbtxt");
    if (!g.ok()) return g.status();
    RunContext ctx;
    auto out = g->Run(inputs, ctx, options);
    if (!out.ok()) return out.status();
    return std::get<double>(out->at("out"));
  }
};

TEST_F(GraphExecutorTest, SameAnswerInProcessAndThroughADispatcher) {
  EXPECT_EQ(*Run({}), 31.0);
  FakeDispatcher d;
  RunOptions o;
  o.dispatcher = &d;
  EXPECT_EQ(*Run(o), 31.0);
  // Local nodes stay local; each step's two calls, then the last node.
  EXPECT_THAT(d.calls, ::testing::UnorderedElementsAre("left@1", "right@1", "left@2", "right@2",
                                                       "left@3", "right@3", "post@0"));
  EXPECT_EQ(d.calls.back(), "post@0");
}

TEST_F(GraphExecutorTest, IndependentCallsOverlapUpToTheBound) {
  FakeDispatcher d;
  d.barrier = 2;  // each call waits until two are in flight: passes only if left and right overlap
  RunOptions o;
  o.dispatcher = &d;
  EXPECT_EQ(*Run(o), 31.0);
  EXPECT_EQ(d.max_in_flight, 2);
  // With room for one call at a time they take turns (and still give the same answer).
  FakeDispatcher serial;
  o.dispatcher = &serial;
  o.max_parallel_calls = 1;
  EXPECT_EQ(*Run(o), 31.0);
  EXPECT_EQ(serial.max_in_flight, 1);
}

TEST_F(GraphExecutorTest, CancellationStopsTheRunInEachState) {
  std::atomic<bool> cancel{true};
  FakeDispatcher before;
  RunOptions o;
  o.dispatcher = &before;
  o.cancelled = &cancel;
  auto r = Run(o);  // raised before the run: nothing is called
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(before.calls.empty());

  // Raised during a call at step 2: that step's calls finish, no later node starts.
  cancel = false;
  FakeDispatcher between;
  between.cancel = &cancel;
  between.cancel_at_node = "left";
  between.cancel_at_step = 2;
  o.dispatcher = &between;
  r = Run(o);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(r.status().message(), HasSubstr("run cancelled before node 'sum' (TestLocal)"));
  EXPECT_EQ(between.calls.size(), 4u);  // left/right of steps 1 and 2

  // A call in flight sees the flag and gives up: the run ends with that call's CANCELLED.
  cancel = false;
  FakeDispatcher during;
  during.cancel = &cancel;
  during.cancel_at_node = "post";
  during.cancel_at_step = 0;
  during.wait_for_cancel = true;
  o.dispatcher = &during;
  r = Run(o);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(r.status().message(), HasSubstr("node 'post' (TestRemote)"));
}

TEST_F(GraphExecutorTest, AnErrorFromAnyNodeEndsTheRunNamingIt) {
  for (const auto& [node, step] : std::vector<std::pair<std::string, int>>{
           {"left", 1}, {"right", 2}, {"left", 3}, {"post", 0}}) {
    FakeDispatcher d;
    d.fail_node = node;
    d.fail_step = step;
    RunOptions o;
    o.dispatcher = &d;
    auto r = Run(o);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << node;
    EXPECT_THAT(r.status().message(),
                HasSubstr("node '" + node + "' (TestRemote): the worker ran out of memory"));
    for (const std::string& c : d.calls)  // nothing after the failing step was called
      EXPECT_LE(std::stoi(c.substr(c.find('@') + 1)), step == 0 ? 3 : step) << c;
  }
  // A local node's error too (a wrong input value names the node and the port).
  auto r = Run({}, {{"n", int64_t{-1}}});
  EXPECT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("node 'steps' (TestSteps)"));
}

TEST_F(GraphExecutorTest, ReleaseModelsClosesKernelsAfterTheirLastUse) {
  ASSERT_EQ(g_local_kernels.load(), 0);
  FakeDispatcher keep;
  RunOptions o;
  o.dispatcher = &keep;
  ASSERT_EQ(*Run(o), 31.0);
  EXPECT_EQ(keep.local_kernels_when_left, 2);  // pre and sum, both open during the loop
  FakeDispatcher release;
  o.dispatcher = &release;
  o.release_models = true;
  ASSERT_EQ(*Run(o), 31.0);
  EXPECT_EQ(release.local_kernels_when_left, 1);  // pre closed once it had run; sum still needed
  EXPECT_EQ(g_local_kernels.load(), 0);
}

TEST_F(GraphExecutorTest, ProgressNamesEveryNodeWithItsStep) {
  std::vector<std::string> seen;
  RunOptions o;
  o.on_progress = [&](const Progress& p) {
    seen.push_back(absl::StrCat(p.node, "@", p.step, "/", p.steps));
  };
  ASSERT_EQ(*Run(o), 31.0);
  EXPECT_THAT(seen, ::testing::ElementsAre("steps@0/0", "pre@0/0", "left@1/3", "right@1/3",
                                           "sum@1/3", "left@2/3", "right@2/3", "sum@2/3",
                                           "left@3/3", "right@3/3", "sum@3/3", "post@0/0"));
}

// Placement WORKER: the loop goes to the dispatcher as one graph (its outer values as inputs, its
// carries as outputs) and gives the answer it gives node by node; the graph-level, loop-level and
// run-level settings pick it in that order of strength.
TEST_F(GraphExecutorTest, LoopPlacedOnAWorkerIsOneGraphWithTheSameAnswer) {
  FakeGraphRunner d;
  RunOptions o;
  o.dispatcher = &d;
  o.placement = v1::WORKER;
  std::vector<std::string> seen;
  o.on_progress = [&](const Progress& p) { seen.push_back(absl::StrCat(p.node, "@", p.step)); };
  EXPECT_EQ(*Run(o), 31.0);
  EXPECT_THAT(d.calls, ::testing::ElementsAre("post@0"));  // the loop's calls went as one graph
  ASSERT_EQ(d.graphs.size(), 1u);
  EXPECT_EQ(d.loops[0], "L");
  EXPECT_EQ(d.steps, 3);
  EXPECT_THAT(d.graphs[0], HasSubstr("init: \"@in"));  // the carry's first value came in
  EXPECT_THAT(seen,
              ::testing::ElementsAre("steps@0", "pre@0", "left@1", "right@1", "sum@1", "left@2",
                                     "right@2", "sum@2", "left@3", "right@3", "sum@3", "post@0"));
  // Said by the graph, and overruled by the loop, and the graph's overruled by the run.
  std::string by_graph = std::string("placement: WORKER\n") + kGraph;
  FakeGraphRunner g1;
  o = {};
  o.dispatcher = &g1;
  EXPECT_EQ(*Run(o, {}, by_graph), 31.0);
  EXPECT_EQ(g1.graphs.size(), 1u);
  std::string by_loop = by_graph;
  const std::string loop = "loop { name: \"L\"";
  by_loop.replace(by_loop.find(loop), loop.size(), loop + " placement: NODES");
  FakeGraphRunner g2;
  o.dispatcher = &g2;
  EXPECT_EQ(*Run(o, {}, by_loop), 31.0);
  EXPECT_TRUE(g2.graphs.empty());
  FakeGraphRunner g3;
  o.dispatcher = &g3;
  o.placement = v1::NODES;
  EXPECT_EQ(*Run(o, {}, by_graph), 31.0);
  EXPECT_TRUE(g3.graphs.empty());
  EXPECT_EQ(g3.calls.size(), 7u);
  // A dispatcher that runs no graphs takes the loop node by node.
  FakeDispatcher plain;
  o.dispatcher = &plain;
  o.placement = v1::WORKER;
  EXPECT_EQ(*Run(o), 31.0);
  EXPECT_EQ(plain.calls.size(), 7u);
  // The run's CFG batching goes with the loop (on AUTO the worker decides by its own device).
  FakeGraphRunner joined;
  o.dispatcher = &joined;
  o.cfg_batch = v1::CFG_BATCH_ON;
  EXPECT_EQ(*Run(o), 31.0);
  ASSERT_EQ(joined.graphs.size(), 1u);
  EXPECT_THAT(joined.graphs[0], HasSubstr("cfg_batch: CFG_BATCH_ON"));
}

TEST_F(GraphExecutorTest, LoopOnAWorkerReturnsCapturesAndNamesItsErrorsAsHere) {
  RunOptions local;
  local.capture = {"sum.y", "L.v"};
  auto g = Graph::FromText(kGraph, "executor_test.pbtxt");
  ASSERT_TRUE(g.ok()) << g.status();
  RunContext ctx;
  auto want = g->Run({}, ctx, local);
  ASSERT_TRUE(want.ok()) << want.status();
  FakeGraphRunner d;
  RunOptions o = local;
  o.dispatcher = &d;
  o.placement = v1::WORKER;
  auto got = g->Run({}, ctx, o);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(std::get<double>(got->at("sum.y")), 30.0);  // the last step's value
  EXPECT_EQ(std::get<double>(got->at("sum.y")), std::get<double>(want->at("sum.y")));
  EXPECT_EQ(std::get<double>(got->at("L.v")), std::get<double>(want->at("L.v")));

  FakeGraphRunner failing;
  failing.fail = "node 'd~left' (TestRemote): the worker ran out of memory";
  o.dispatcher = &failing;
  auto r = g->Run({}, ctx, o);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(r.status().message(), HasSubstr("loop 'L' (on a worker): node 'd~left'"));
  LoopFragment f;
  f.names = {{"d~left", "d/left"}, {"L", "L"}};
  EXPECT_EQ(WithHostNames(f, "node 'd~left' failed; 'd~left2' and d~left stay"),
            "node 'd/left' failed; 'd~left2' and d~left stay");
  EXPECT_EQ(FragmentName("denoise/eps/unet_cond"), "denoise~eps~unet_cond");
}

TEST_F(GraphExecutorTest, CancellingALoopOnAWorkerStopsItThere) {
  std::atomic<bool> cancel{false};
  FakeGraphRunner d;
  d.cancel = &cancel;
  d.cancel_at_step = 2;
  RunOptions o;
  o.dispatcher = &d;
  o.placement = v1::WORKER;
  o.cancelled = &cancel;
  std::vector<int> steps;
  o.on_progress = [&](const Progress& p) { steps.push_back(p.step); };
  auto r = Run(o);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(r.status().message(), HasSubstr("loop 'L' (on a worker)"));
  EXPECT_EQ(steps.back(), 2);    // nothing of step 3 ran
  EXPECT_TRUE(d.calls.empty());  // nor the node after the loop
}

// A loop inside a subgraph: its flat names ("twice/left") travel as "twice~left" and come back in
// progress as they are here.
TEST_F(GraphExecutorTest, LoopOfASubgraphOnAWorkerKeepsItsNames) {
  constexpr char kSub[] = R"(
subgraph { name: "twice" input { name: "v0" type { kind: FLOAT } } input { name: "n" type { kind: INT } }
  node { kind: "TestSteps" name: "steps" input: "n=@n" }
  loop { name: "L" timesteps: "steps.timesteps" carry { name: "v" init: "@v0" next: "sum.y" }
    placement: WORKER
    node { kind: "TestRemote" name: "left" input: "x=@loop.v" }
    node { kind: "TestRemote" name: "right" input: "x=@loop.v" }
    node { kind: "TestLocal" name: "sum" input: "a=left.y" input: "b=right.y" } }
  output { name: "v" source: "L.v" } }
input { name: "x" type { kind: FLOAT } default_value { f: 1 } }
input { name: "n" type { kind: INT } default_value { i: 3 } }
node { kind: "TestLocal" name: "pre" input: "a=@x" input: "b=@x" }
node { kind: "twice" name: "d" input: "v0=pre.y" input: "n=@n" }
node { kind: "TestRemote" name: "post" input: "x=d.v" }
output { name: "out" source: "post.y" }
)";
  FakeGraphRunner d;
  RunOptions o;
  o.dispatcher = &d;
  std::set<std::string> nodes;
  o.on_progress = [&](const Progress& p) { nodes.insert(p.node); };
  EXPECT_EQ(*Run(o, {}, kSub), 31.0);
  ASSERT_EQ(d.loops.size(), 1u);
  EXPECT_EQ(d.loops[0], "d/L");
  EXPECT_THAT(d.graphs[0], HasSubstr("name: \"d~left\""));
  EXPECT_THAT(nodes, ::testing::IsSupersetOf({"d/left", "d/right", "d/sum", "post"}));
}

// Typed ports with dims: a worker's answer of the wrong size is refused at the node it answers for,
// naming the port and the axis; inputs that do not fit each other are refused before any call.
constexpr char kDecodeGraph[] = R"(
input { name: "latents" type { kind: TENSOR dtype: FLOAT32 rank: 4 } }
input { name: "noise" type { kind: TENSOR dtype: FLOAT32 rank: 4 } }
node { kind: "TestDecode" name: "decode" input: "latents=@latents" input: "noise=@noise" }
output { name: "image" source: "decode.image" }
)";

absl::StatusOr<torch::Tensor> Decode(NodeDispatcher* d, const torch::Tensor& latents,
                                     const torch::Tensor& noise) {
  SD_ASSIGN_OR_RETURN(Graph g, Graph::FromText(kDecodeGraph, "decode.pbtxt"));
  RunContext ctx;
  RunOptions o;
  o.dispatcher = d;
  SD_ASSIGN_OR_RETURN(auto out, g.Run({{"latents", latents}, {"noise", noise}}, ctx, o));
  return std::get<torch::Tensor>(out.at("image"));
}

TEST_F(GraphExecutorTest, AnOutputOfTheWrongSizeIsCaughtWhereItArrives) {
  const torch::Tensor latents = torch::zeros({2, 4, 8, 6});
  // In-process, and a worker answering with the right size (f = 8, or any whole scale).
  auto local = Decode(nullptr, latents, latents);
  ASSERT_TRUE(local.ok()) << local.status();
  EXPECT_EQ(local->sizes(), torch::IntArrayRef({2, 3, 64, 48}));
  for (const std::vector<int64_t>& good : {std::vector<int64_t>{2, 3, 64, 48}, {2, 3, 32, 24}}) {
    ShapeDispatcher d(good);
    EXPECT_TRUE(Decode(&d, latents, latents).ok());
    EXPECT_EQ(d.calls, 1);
  }
  // Wrong sizes: each names the node, the port and the axis.
  const std::vector<std::pair<std::vector<int64_t>, std::string>> bad = {
      {{2, 3, 64, 40}, "axis 3 is 40, expected w*f = 48 (w=6, f=8)"},
      {{2, 3, 60, 48}, "axis 2 is 60, expected h*f: not a multiple of 8 (h=8)"},
      {{1, 3, 64, 48}, "axis 0 is 1, expected B = 2"},
      {{2, 4, 64, 48}, "axis 1 is 4, expected 3"},
  };
  for (const auto& [shape, why] : bad) {
    ShapeDispatcher d(shape);
    auto r = Decode(&d, latents, latents);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal) << why;
    EXPECT_THAT(r.status().message(), HasSubstr("node 'decode' (TestDecode) output 'image'"))
        << why;
    EXPECT_THAT(r.status().message(), HasSubstr(why));
  }
  // Inputs that disagree (a batch of 2 and a noise of 1) never reach a worker.
  ShapeDispatcher d({2, 3, 64, 48});
  auto r = Decode(&d, latents, torch::zeros({1, 4, 8, 6}));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(),
              HasSubstr("input 'noise' [1, 4, 8, 6]: axis 0 is 1, expected B = 2"));
  EXPECT_EQ(d.calls, 0);
}

}  // namespace
}  // namespace sd

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

namespace sd {
namespace {

using ::testing::HasSubstr;

// "Remote" (needs a model: what dispatchers take) computes y = x + 1 when it runs in-process;
// "Local" y = a + b; "Steps" the timesteps 0..n-1. Local kernels count themselves.
std::atomic<int> g_local_kernels{0};

struct RemoteKernel : NodeKernel {
  explicit RemoteKernel(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    out["y"] = *in.Float("x") + 1.0;
    return absl::OkStatus();
  }
};
struct LocalKernel : NodeKernel {
  explicit LocalKernel(const google::protobuf::Any&) { ++g_local_kernels; }
  ~LocalKernel() override { --g_local_kernels; }
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    out["y"] = *in.Float("a") + *in.Float("b");
    return absl::OkStatus();
  }
};
struct StepsKernel : NodeKernel {
  explicit StepsKernel(const google::protobuf::Any&) {}
  absl::Status Process(const NodeInputs& in, NodeOutputs& out) override {
    out["timesteps"] = torch::arange(*in.Int("n"), torch::kInt64);
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

class GraphExecutorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    RegisterTestKind<RemoteKernel>("TestRemote", NodeContract{{{"x", ScalarPort(v1::FLOAT)}},
                                                              {{"y", ScalarPort(v1::FLOAT)}},
                                                              nullptr,
                                                              "y = x + 1",
                                                              /*needs_model=*/true});
    RegisterTestKind<LocalKernel>(
        "TestLocal", NodeContract{{{"a", ScalarPort(v1::FLOAT)}, {"b", ScalarPort(v1::FLOAT)}},
                                  {{"y", ScalarPort(v1::FLOAT)}},
                                  nullptr,
                                  "y = a + b"});
    RegisterTestKind<StepsKernel>("TestSteps",
                                  NodeContract{{{"n", ScalarPort(v1::INT)}},
                                               {{"timesteps", TensorPort(v1::INT64, 1)}},
                                               nullptr,
                                               "0..n-1"});
  }
  absl::StatusOr<double> Run(RunOptions options, std::map<std::string, Value> inputs = {}) {
    auto g = Graph::FromText(kGraph, "executor_test.pbtxt");
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

}  // namespace
}  // namespace sd

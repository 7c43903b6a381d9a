// sd.v1.Worker/RunGraph as an outside client sees it: a loop sent as a graph runs on the worker and
// streams one event per node, then the outputs; the graph is untrusted input (no imports, bounded
// sizes and steps, a model named where one is used, a token required) and each refusal has its
// code, the worker serving on afterwards.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <thread>

#include "proto/sd/v1/worker.grpc.pb.h"
#include "tests/integration/worker_harness.h"

namespace sd::testing {
namespace {

constexpr char kToken[] = "t0ken-for-graph-runs";

// v <- cfg(v, 0, 2) = 2 v, once per timestep; the result is "v".
constexpr char kDoubling[] = R"(
input { name: "x" type { kind: TENSOR dtype: FLOAT32 rank: 4 } }
input { name: "zero" type { kind: TENSOR dtype: FLOAT32 rank: 4 } }
input { name: "ts" type { kind: TENSOR dtype: INT64 rank: 1 } }
loop { name: "L" timesteps: "@ts" carry { name: "v" init: "@x" next: "c.eps" }
  node { kind: "CfgCombine" name: "c" input: "cond=@loop.v" input: "uncond=@zero" input: "scale=#2" } }
output { name: "v" source: "L.v" }
)";

void AddTensor(v1::RunGraphRequest& r, const std::string& name, const std::string& datatype,
               const std::vector<int64_t>& shape, const void* data, size_t bytes) {
  auto* in = r.add_inputs();
  in->set_name(name);
  in->set_datatype(datatype);
  for (int64_t d : shape) in->add_shape(d);
  r.add_raw_input_contents(std::string(static_cast<const char*>(data), bytes));
}

// The doubling loop over `steps` timesteps on x = 1, 2, ..., 16 ([1, 1, 4, 4]).
v1::RunGraphRequest Doubling(int64_t steps) {
  v1::RunGraphRequest r;
  r.set_id("test/1");
  r.set_graph(kDoubling);
  std::vector<float> x(16), zero(16, 0.f);
  for (int i = 0; i < 16; ++i) x[i] = static_cast<float>(i + 1);
  std::vector<int64_t> ts(steps);
  for (int64_t i = 0; i < steps; ++i) ts[i] = i;
  AddTensor(r, "x", "FP32", {1, 1, 4, 4}, x.data(), x.size() * 4);
  AddTensor(r, "zero", "FP32", {1, 1, 4, 4}, zero.data(), zero.size() * 4);
  AddTensor(r, "ts", "INT64", {steps}, ts.data(), ts.size() * 8);
  return r;
}

struct Answer {
  grpc::Status status;
  std::vector<v1::RunGraphEvent> progress;
  v1::RunGraphEvent last;
};

class WorkerGraphRunsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    std::filesystem::create_directories(dir_->File("models"));
    auto r = MakeTestCheckpoint(dir_->File("models/tiny.safetensors"));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    WriteFile(dir_->File("token"), std::string(kToken) + "\n");
    worker_ = new WorkerProcess();
    ASSERT_TRUE(worker_->Start(dir_->File("models"), dir_->File("w.log"),
                               {"--token-file", dir_->File("token")}));
  }
  static void TearDownTestSuite() {
    delete worker_;
    delete dir_;
  }
  static Answer Run(const v1::RunGraphRequest& req, const std::string& token = kToken) {
    auto stub = v1::Worker::NewStub(
        grpc::CreateChannel(worker_->target(), grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
    Answer a;
    auto reader = stub->RunGraph(&ctx, req);
    v1::RunGraphEvent e;
    while (reader->Read(&e)) (e.done() ? a.last : a.progress.emplace_back()) = e;
    a.status = reader->Finish();
    return a;
  }
  inline static TempDir* dir_ = nullptr;
  inline static WorkerProcess* worker_ = nullptr;
};

TEST_F(WorkerGraphRunsTest, ALoopRunsThereAndStreamsEveryStep) {
  const Answer a = Run(Doubling(3));
  ASSERT_TRUE(a.status.ok()) << a.status.error_message();
  ASSERT_EQ(a.progress.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(a.progress[i].step(), i + 1);
    EXPECT_EQ(a.progress[i].steps(), 3);
    EXPECT_EQ(a.progress[i].node(), "c");
  }
  ASSERT_TRUE(a.last.done());
  ASSERT_EQ(a.last.outputs_size(), 1);
  EXPECT_EQ(a.last.outputs(0).name(), "v");
  EXPECT_EQ(a.last.outputs(0).datatype(), "FP32");
  std::vector<float> v(16);
  ASSERT_EQ(a.last.raw_output_contents(0).size(), 64u);
  std::memcpy(v.data(), a.last.raw_output_contents(0).data(), 64);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(v[i], 8.f * (i + 1)) << i;  // doubled three times
  EXPECT_FALSE(worker_->Events("graph_step").empty());
}

TEST_F(WorkerGraphRunsTest, UntrustedGraphsAreRefusedWithTheirCodeAndTheWorkerServesOn) {
  struct Case {
    std::string what;
    v1::RunGraphRequest req;
    std::string token;
    grpc::StatusCode code;
    std::string says;
  };
  std::vector<Case> cases;
  cases.push_back({"no token", Doubling(1), "", grpc::StatusCode::UNAUTHENTICATED, "bearer token"});
  v1::RunGraphRequest imports = Doubling(1);
  imports.set_graph("import: \"sd.pbtxt\"\n" + imports.graph());
  cases.push_back(
      {"an import", imports, kToken, grpc::StatusCode::INVALID_ARGUMENT, "can't be imported here"});
  cases.push_back({"too many steps", Doubling(1001), kToken, grpc::StatusCode::INVALID_ARGUMENT,
                   "1001 steps exceeds this worker's limit of 1000"});
  v1::RunGraphRequest huge;
  huge.set_graph(R"(node { kind: "Noise" name: "n" input: "seed=#1" input: "width=#100000"
                     input: "height=#64" }
                   output { name: "x" source: "n.noise" })");
  cases.push_back(
      {"a huge noise", huge, kToken, grpc::StatusCode::INVALID_ARGUMENT, "--max-image-size"});
  v1::RunGraphRequest unet;
  unet.set_graph(R"(input { name: "l" type { kind: TENSOR dtype: FLOAT32 rank: 4 } }
                    input { name: "c" type { kind: TENSOR dtype: FLOAT32 rank: 3 } }
                    node { kind: "UNetStep" name: "u" input: "latents=@l" input: "t=#1.0"
                           input: "context=@c" }
                    output { name: "eps" source: "u.eps" })");
  cases.push_back({"a model kind without a model", unet, kToken, grpc::StatusCode::INVALID_ARGUMENT,
                   "computes with a model"});
  v1::RunGraphRequest not_a_graph = Doubling(1);
  not_a_graph.set_graph("loop { name: ");
  cases.push_back({"not a graph", not_a_graph, kToken, grpc::StatusCode::INVALID_ARGUMENT, ""});
  v1::RunGraphRequest wrong_input = Doubling(1);
  wrong_input.mutable_inputs(0)->set_name("nope");
  cases.push_back({"an input the graph lacks", wrong_input, kToken,
                   grpc::StatusCode::INVALID_ARGUMENT, "graph input 'nope'"});
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const Answer a = Run(c.req, c.token);
    EXPECT_EQ(a.status.error_code(), c.code) << a.status.error_message();
    EXPECT_NE(a.status.error_message().find(c.says), std::string::npos) << a.status.error_message();
    EXPECT_FALSE(a.last.done());
  }
  EXPECT_TRUE(Run(Doubling(2)).status.ok()) << "the worker serves on";
}

// A caller that gives up reaches the worker: held on arrival (--hold-calls), the call is cancelled
// by its client; once let go, the worker runs nothing of it and logs it CANCELLED.
TEST_F(WorkerGraphRunsTest, CancellingTheCallCancelsTheRun) {
  TempDir d;
  std::filesystem::create_directories(d.File("hold"));
  WorkerProcess w;
  ASSERT_TRUE(w.Start(dir_->File("models"), d.File("w.log"), {"--hold-calls", d.File("hold")}));
  auto stub =
      v1::Worker::NewStub(grpc::CreateChannel(w.target(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  std::thread caller([&] {
    auto reader = stub->RunGraph(&ctx, Doubling(3));
    v1::RunGraphEvent e;
    while (reader->Read(&e)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  });
  const std::string arrived = d.File("hold/RunGraph@test@1.arrived");
  for (int i = 0; i < 6000 && !std::filesystem::exists(arrived); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_TRUE(std::filesystem::exists(arrived));
  ctx.TryCancel();
  caller.join();
  WriteFile(d.File("hold/release"), "");
  std::vector<nlohmann::json> runs;
  for (int i = 0; i < 6000 && runs.empty(); ++i) {
    runs = w.Events("graph_run");
    if (runs.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].value("code", ""), "CANCELLED");
  EXPECT_TRUE(w.Events("graph_step").empty());
}

}  // namespace
}  // namespace sd::testing

// The worker pool in-process against real sd-worker processes: a dns:/// target is one member per
// address it resolves to, each with its own health and model-hash check, and resolving again lets
// new addresses join and vanished ones leave. The resolver is the pool's test seam (a real
// multi-address name needs a DNS server or /etc/hosts entries, which tests do not touch).
#include "host_plugin/runtime/worker_pool.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <mutex>

#include "nodes/ops/node.h"
#include "tests/integration/worker_harness.h"

namespace sd::testing {
namespace {

// Polls `done` (explicit synchronisation on the pool's state) for up to a minute.
bool WaitFor(const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(1);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

std::optional<WorkerPool::WorkerStats> Member(const WorkerPool& pool, const std::string& target) {
  for (const auto& s : pool.Stats()) {
    if (s.target == target) return s;
  }
  return std::nullopt;
}

absl::StatusOr<NodeOutputs> EncodeTokens(WorkerPool& pool) {
  StockNodeKinds();
  const NodeKind* kind = *NodeRegistry::Get().Find("ClipEncode");
  const NodeContract contract = kind->contract();
  const std::string node = "clip", name = "ClipEncode", checkpoint = "tiny";
  const google::protobuf::Any options;
  const std::map<std::string, Value> inputs = {
      {"tokens", Value(torch::full({1, 77}, 49407, torch::kInt64))}};
  return pool.Call(NodeCall{node, name, options, contract, inputs, checkpoint, 0}, nullptr);
}

TEST(WorkerPoolDnsTest, EveryResolvedAddressIsAMemberWithItsOwnHealth) {
  TempDir d;
  std::filesystem::create_directories(d.File("models"));
  auto r = RunCommand(SdGraphBin() + " make-test-checkpoint --tiny " +
                      Quote(d.File("models/tiny.safetensors")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  WorkerProcess a, b, c;
  ASSERT_TRUE(a.Start(d.File("models"), d.File("a.log")));
  ASSERT_TRUE(b.Start(d.File("models"), d.File("b.log")));

  const std::string service = "dns:///workers.test:50051";
  std::mutex mu;
  std::vector<std::string> answer = {a.target(), b.target()};
  WorkerPoolOptions o;
  o.targets = {service};
  o.resolve_interval_s = 0.05;
  o.health_interval_s = 0.05;
  o.resolver = [&](const std::string& t) -> absl::StatusOr<std::vector<std::string>> {
    std::lock_guard<std::mutex> lock(mu);
    if (t != service) return absl::NotFoundError(t);
    return answer;
  };
  auto pool = WorkerPool::Create(o);
  ASSERT_TRUE(pool.ok()) << pool.status();
  auto info = (*pool)->Prepare("tiny");
  ASSERT_TRUE(info.ok()) << info.status();
  ASSERT_EQ((*pool)->size(), 2u);
  for (const std::string& t : {a.target(), b.target()}) {
    auto m = Member(**pool, t);
    ASSERT_TRUE(m.has_value()) << t;
    EXPECT_TRUE(m->healthy) << t;
    EXPECT_EQ(m->origin, service);
  }
  ASSERT_TRUE(EncodeTokens(**pool).ok());

  // One member dies: it alone is down; the service still answers.
  a.Kill(SIGKILL);
  EXPECT_TRUE(WaitFor([&] { return !Member(**pool, a.target())->healthy; }));
  EXPECT_TRUE(Member(**pool, b.target())->healthy);
  auto out = EncodeTokens(**pool);
  EXPECT_TRUE(out.ok()) << out.status();

  // The name now resolves to b and a new c: c joins (after its model hash is checked), a leaves.
  ASSERT_TRUE(c.Start(d.File("models"), d.File("c.log")));
  {
    std::lock_guard<std::mutex> lock(mu);
    answer = {b.target(), c.target()};
  }
  EXPECT_TRUE(WaitFor([&] {
    auto m = Member(**pool, c.target());
    return m.has_value() && m->healthy && !Member(**pool, a.target()).has_value();
  }));
  EXPECT_EQ((*pool)->size(), 2u);
  EXPECT_FALSE(c.Events("model_loaded").empty()) << "the new member was asked for the model";
}

// Destroying a pool cancels a rejoin in flight instead of waiting for it (up to the call timeout,
// 600 s): the restarted worker's model load is held and never released, and the destructor must
// return all the same. (Were it to wait, this test would hang until ctest's timeout.)
TEST(WorkerPoolShutdownTest, DestroyingThePoolCancelsARejoinInFlight) {
  TempDir d;
  std::filesystem::create_directories(d.File("models"));
  std::filesystem::create_directories(d.File("hold"));
  auto r = RunCommand(SdGraphBin() + " make-test-checkpoint --tiny " +
                      Quote(d.File("models/tiny.safetensors")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string load = d.File("hold/LoadModel@tiny");
  WriteFile(load + ".go", "");  // the first load passes
  WorkerProcess a;
  ASSERT_TRUE(a.Start(d.File("models"), d.File("a.log"), {"--hold-calls", d.File("hold")}));
  WorkerPoolOptions o;
  o.targets = {a.target()};
  o.health_interval_s = 0.05;
  auto pool = WorkerPool::Create(o);
  ASSERT_TRUE(pool.ok()) << pool.status();
  ASSERT_TRUE((*pool)->Prepare("tiny").ok());

  a.Kill(SIGKILL);
  std::filesystem::remove(load + ".go");
  std::filesystem::remove(load + ".arrived");
  ASSERT_TRUE(a.Restart());
  ASSERT_TRUE(WaitFor([&] { return std::filesystem::exists(load + ".arrived"); }))
      << "the pool never tried to bring the worker back";
  pool->reset();  // returns although the load it is waiting for is held
  WriteFile(d.File("hold/release"), "");
}

}  // namespace
}  // namespace sd::testing

// The worker pool in-process against real sd-worker processes: a dns:/// target is one member per
// address it resolves to, each with its own health and model-hash check, and resolving again lets
// new addresses join and vanished ones leave. One test goes through the pool's resolver seam; one
// resolves for real, through a DNS server of its own on loopback (dns://SERVER/NAME:PORT) that
// answers with several addresses, 127.0.0.1, .2 and .3, each a worker on the same port.
#include "host_plugin/runtime/worker_pool.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>

#include "host_plugin/runtime/worker_resolver.h"
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

// DIR/models/tiny.safetensors: the test checkpoint the workers serve.
void WriteTinyModel(const TempDir& d) {
  std::filesystem::create_directories(d.File("models"));
  auto r = RunCommand(SdGraphBin() + " make-test-checkpoint --tiny " +
                      Quote(d.File("models/tiny.safetensors")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

// What both DNS tests play, whatever resolves the name (o.targets[0]): it names workers a and b,
// both running; each becomes a healthy member of its own; a dies and alone goes down while calls
// still succeed; then `resolve_to_b_and_c` makes the name resolve to b and c (already running):
// c joins, after being asked for the model, and a leaves.
void ExpectMembersFollowTheName(const WorkerPoolOptions& o, WorkerProcess& a, WorkerProcess& b,
                                WorkerProcess& c, const std::function<void()>& resolve_to_b_and_c) {
  auto pool = WorkerPool::Create(o);
  ASSERT_TRUE(pool.ok()) << pool.status();
  auto info = (*pool)->Prepare("tiny");
  ASSERT_TRUE(info.ok()) << info.status();
  ASSERT_EQ((*pool)->size(), 2u);
  for (const std::string& t : {a.target(), b.target()}) {
    auto m = Member(**pool, t);
    ASSERT_TRUE(m.has_value()) << t;
    EXPECT_TRUE(m->healthy) << t;
    EXPECT_EQ(m->origin, o.targets[0]);
  }
  ASSERT_TRUE(EncodeTokens(**pool).ok());

  // One member dies: it alone is down; the service still answers.
  a.Kill(SIGKILL);
  EXPECT_TRUE(WaitFor([&] { return !Member(**pool, a.target())->healthy; }));
  EXPECT_TRUE(Member(**pool, b.target())->healthy);
  auto out = EncodeTokens(**pool);
  EXPECT_TRUE(out.ok()) << out.status();

  // The name now resolves to b and c: c joins (after its model hash is checked), a leaves.
  resolve_to_b_and_c();
  EXPECT_TRUE(WaitFor([&] {
    auto m = Member(**pool, c.target());
    return m.has_value() && m->healthy && !Member(**pool, a.target()).has_value();
  }));
  EXPECT_EQ((*pool)->size(), 2u);
  EXPECT_FALSE(c.Events("model_loaded").empty()) << "the new member was asked for the model";
}

WorkerPoolOptions DnsPoolOptions(const std::string& service) {
  WorkerPoolOptions o;
  o.targets = {service};
  o.resolve_interval_s = 0.05;
  o.health_interval_s = 0.05;
  return o;
}

TEST(WorkerPoolDnsTest, EveryResolvedAddressIsAMemberWithItsOwnHealth) {
  TempDir d;
  ASSERT_NO_FATAL_FAILURE(WriteTinyModel(d));
  WorkerProcess a, b, c;
  ASSERT_TRUE(a.Start(d.File("models"), d.File("a.log")));
  ASSERT_TRUE(b.Start(d.File("models"), d.File("b.log")));
  ASSERT_TRUE(c.Start(d.File("models"), d.File("c.log")));

  const std::string service = "dns:///workers.test:50051";
  std::mutex mu;
  std::vector<std::string> answer = {a.target(), b.target()};
  WorkerPoolOptions o = DnsPoolOptions(service);
  o.resolver = [&](const std::string& t) -> absl::StatusOr<std::vector<std::string>> {
    std::lock_guard<std::mutex> lock(mu);
    if (t != service) return absl::NotFoundError(t);
    return answer;
  };
  ExpectMembersFollowTheName(o, a, b, c, [&] {
    std::lock_guard<std::mutex> lock(mu);
    answer = {b.target(), c.target()};
  });
}

// tests/python/tiny_dns.py on a loopback UDP port, stopped by the PID this started.
class DnsServer {
 public:
  explicit DnsServer(const TempDir& d)
      : zone_(d.File("zone.txt")), port_file_(d.File("dns.port")) {}
  ~DnsServer() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  void SetZone(const std::string& name, const std::vector<std::string>& addresses) {
    std::string line = name;
    for (const std::string& a : addresses) line += " " + a;
    WriteFile(zone_ + ".tmp", line + "\n");
    std::filesystem::rename(zone_ + ".tmp", zone_);
  }
  bool Start() {
    pid_ = ::fork();
    if (pid_ == 0) {
      const std::string script = PythonDir() + "/tiny_dns.py";
      ::execlp(SD_TEST_PYTHON, SD_TEST_PYTHON, script.c_str(), zone_.c_str(), port_file_.c_str(),
               static_cast<char*>(nullptr));
      ::_exit(127);
    }
    for (int i = 0; i < 300; ++i) {
      std::ifstream f(port_file_);
      if (f >> port_) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  std::string zone_, port_file_;
  pid_t pid_ = -1;
  int port_ = 0;
};

TEST(WorkerPoolDnsTest, TargetsParseWithAndWithoutADnsServer) {
  struct Case {
    std::string target, host, server;
    int port;
  };
  for (const Case& c : std::vector<Case>{
           {"dns:///svc.ns.svc.cluster.local:50051", "svc.ns.svc.cluster.local", "", 50051},
           {"dns:svc:7", "svc", "", 7},
           {"dns://10.0.0.10/svc:50051", "svc", "10.0.0.10:53", 50051},
           {"dns://127.0.0.1:5353/svc:1", "svc", "127.0.0.1:5353", 1},
           {"dns://[::1]:5353/svc:2", "svc", "[::1]:5353", 2},
           {"dns://[fd00::a]/svc:3", "svc", "[fd00::a]:53", 3}}) {
    auto t = ParseDnsTarget(c.target);
    ASSERT_TRUE(t.ok()) << c.target << ": " << t.status();
    EXPECT_EQ(t->host, c.host) << c.target;
    EXPECT_EQ(t->server, c.server) << c.target;
    EXPECT_EQ(t->port, c.port) << c.target;
  }
  for (const char* bad : {"dns://10.0.0.10", "dns://10.0.0.10:0/svc:1", "dns://[::1/svc:1",
                          "dns:///svc", "dns:///svc:70000", "http://svc:1", "dns://:53/svc:1"}) {
    EXPECT_EQ(ParseDnsTarget(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
    if (std::string(bad).rfind("dns:", 0) == 0) {
      EXPECT_FALSE(WorkerPool::ParseTargets(bad).ok()) << bad;
    }
  }
  EXPECT_TRUE(WorkerPool::ParseTargets("dns://127.0.0.1:5353/svc:1,host:2").ok());
}

TEST(WorkerPoolDnsTest, ARealDnsAnswerWithSeveralAddressesIsOneMemberPerAddress) {
  TempDir d;
  ASSERT_NO_FATAL_FAILURE(WriteTinyModel(d));
  WorkerProcess a, b, c;
  ASSERT_TRUE(a.Start(d.File("models"), d.File("a.log")));
  b.set_host("127.0.0.2");
  ASSERT_TRUE(b.Start(d.File("models"), d.File("b.log"), {}, a.port()));
  DnsServer dns(d);
  const std::string name = "workers.sdgraph.test";
  dns.SetZone(name, {"127.0.0.1", "127.0.0.2"});
  ASSERT_TRUE(dns.Start());
  const std::string service =
      "dns://" + dns.address() + "/" + name + ":" + std::to_string(a.port());

  auto parsed = ParseDnsTarget(service);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  auto resolved = ResolveDnsTarget(*parsed);
  ASSERT_TRUE(resolved.ok()) << resolved.status();
  EXPECT_EQ(*resolved, (std::vector<std::string>{a.target(), b.target()}));
  auto unknown = ParseDnsTarget("dns://" + dns.address() + "/nobody.sdgraph.test:1");
  ASSERT_TRUE(unknown.ok());
  EXPECT_EQ(ResolveDnsTarget(*unknown).status().code(), absl::StatusCode::kUnavailable);

  // The pool with the real resolver (no seam); the worker on 127.0.0.3 waits to be named.
  c.set_host("127.0.0.3");
  ASSERT_TRUE(c.Start(d.File("models"), d.File("c.log"), {}, a.port()));
  ExpectMembersFollowTheName(DnsPoolOptions(service), a, b, c, [&] {
    dns.SetZone(name, {"127.0.0.2", "127.0.0.3"});
  });
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

// Loops placed on one worker (sd-graph --placement worker): each denoising loop is one streaming
// RunGraph request, no UNet call goes out on its own, the image is the in-process one byte for
// byte, every step's progress comes back, and a worker killed mid-loop costs the loop a restart on
// the other worker, not the image. Synchronised on the workers' logs, not on time.
#include <gtest/gtest.h>

#include <csignal>
#include <cstdio>
#include <set>

#include "tests/integration/distributed_fixture.h"

namespace sd::testing {
namespace {

// OK RunGraph requests and UNetStep node calls in the logs of `ws` after `from`.
std::pair<int, int> GraphRunsAndUnetCalls(const std::vector<const WorkerProcess*>& ws,
                                          const std::vector<size_t>& from) {
  int runs = 0, unet = 0;
  for (size_t i = 0; i < ws.size(); ++i) {
    for (const auto& e : ws[i]->Events("graph_run", from[i])) runs += e.value("code", "") == "OK";
    for (const auto& e : ws[i]->Events("infer", from[i])) unet += e.value("kind", "") == "UNetStep";
  }
  return {runs, unet};
}

// Whether sd-graph's progress lines ("step K/N (S s)") went up to step N of N.
bool ProgressReachedTheLastStep(const std::string& err) {
  const size_t at = err.rfind("step ");
  int k = 0, n = -1;
  return at != std::string::npos && std::sscanf(err.c_str() + at, "step %d/%d", &k, &n) == 2 &&
         k == n;
}

TEST_F(DistributedTest, LoopPlacedOnOneWorkerEqualsInProcess) {
  for (const auto& [mode, extra] : ModeCases()) {
    SCOPED_TRACE(mode + " " + extra);
    const std::string local = dir_->File("local.png"), remote = dir_->File("remote.png");
    auto r = RunCommand(Gen(mode, extra, local, ""));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const std::vector<size_t> from = {a_->LogSize(), b_->LogSize()};
    r = RunCommand(Gen(mode, extra + " --placement worker", remote, Pool()));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const int diff = MaxDiff(ReadRgb8(local), ReadRgb8(remote));
    std::printf("[ loop placement ] %s %s: max |diff| vs in-process = %d levels\n", mode.c_str(),
                extra.c_str(), diff);
    EXPECT_EQ(diff, 0) << "f32 on CPU with one thread everywhere: the bytes must be equal";
    const auto [runs, unet] = GraphRunsAndUnetCalls({a_, b_}, from);
    EXPECT_EQ(runs, 1) << "one request for the whole loop";
    EXPECT_EQ(unet, 0) << "no UNet call went out on its own";
    EXPECT_TRUE(ProgressReachedTheLastStep(r.err)) << "progress came back: " << r.err;
  }
  // Said in the graph instead: `placement: WORKER` on the stock graph's loops.
  const std::string graph = dir_->File("placed.pbtxt");
  WriteFile(graph,
            "placement: WORKER\n" + ReadFile(std::string(SD_TEST_GRAPHS_DIR) + "/txt2img.pbtxt"));
  const std::vector<size_t> from = {a_->LogSize(), b_->LogSize()};
  auto r = RunCommand(SdGraphBin() + " run " + Quote(graph) + " --model tiny --workers " + Pool() +
                      " --set prompt='a red fox' --set seed=7 --set steps=4 --set width=64" +
                      " --set height=64 --threads 1 -o " + Quote(dir_->File("g.png")));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(GraphRunsAndUnetCalls({a_, b_}, from).first, 1);
}

TEST_F(DistributedTest, WorkerKilledMidLoopUnderLoopPlacementRestartsTheLoopElsewhere) {
  FreshPair p(Models(*dir_));
  ASSERT_TRUE(p.ok);
  const std::string extra = "--seed 41 --width 256 --height 256";
  auto local = RunCommand(Gen("txt2img", extra, p.run.File("local.png"), "", 24));
  ASSERT_EQ(local.exit_code, 0) << local.err;
  Background client(
      Gen("txt2img", extra + " --placement worker", p.run.File("remote.png"), p.targets(), 24));
  // The worker running the loop dies once it has logged step 3 of 24.
  WorkerProcess* victim = nullptr;
  for (int i = 0; i < 12000 && !victim; ++i) {
    for (WorkerProcess* w : {&p.x, &p.y}) {
      for (const auto& e : w->Events("graph_step")) {
        if (e.value("step", 0) >= 3) victim = w;
      }
    }
    if (!victim) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_NE(victim, nullptr) << "no worker logged step 3 of the loop";
  victim->Kill(SIGKILL);
  const CommandResult& result = client.Wait();
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(MaxDiff(ReadRgb8(p.run.File("local.png")), ReadRgb8(p.run.File("remote.png"))), 0);
  EXPECT_NE(result.err.find("is down"), std::string::npos) << result.err;
  const WorkerProcess& other = victim == &p.x ? p.y : p.x;
  const auto [runs, unet] = GraphRunsAndUnetCalls({&other}, {0});
  EXPECT_EQ(runs, 1) << "the loop ran again, whole, on the other worker";
  EXPECT_EQ(unet, 0);
}

// --loop-workers: the loops go to that pool (a GPU box), everything else to --workers (CPU boxes).
TEST_F(DistributedTest, LoopWorkersTakeTheLoopsAndWorkersTheRest) {
  const std::string local = dir_->File("local.png"), split = dir_->File("split.png");
  auto r = RunCommand(Gen("txt2img", "--seed 12", local, ""));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const size_t from_a = a_->LogSize(), from_b = b_->LogSize();
  r = RunCommand(Gen("txt2img", "--seed 12 --loop-workers " + b_->target(), split, a_->target()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(MaxDiff(ReadRgb8(local), ReadRgb8(split)), 0);
  EXPECT_EQ(GraphRunsAndUnetCalls({b_}, {from_b}), std::make_pair(1, 0));
  EXPECT_TRUE(b_->Events("infer", from_b).empty()) << "the loop workers took only the loop";
  EXPECT_EQ(GraphRunsAndUnetCalls({a_}, {from_a}), std::make_pair(0, 0));
  std::set<std::string> kinds;
  for (const auto& e : a_->Events("infer", from_a)) kinds.insert(e.value("kind", ""));
  EXPECT_TRUE(kinds.count("ClipEncode") && kinds.count("VaeDecode")) << "the rest on --workers";
}

// Both pools must hold the same model file: a loop pool whose "tiny" is another file (same name,
// other bytes) is refused before anything is rendered.
TEST_F(DistributedTest, LoopWorkersWithAnotherModelFileAreRefused) {
  TempDir other;
  std::filesystem::create_directories(Models(other));
  auto r = MakeTestCheckpoint(Models(other) + "/tiny.safetensors", "--tiny --no-extras");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  WorkerProcess c;
  ASSERT_TRUE(c.Start(Models(other), other.File("c.log")));
  const std::string out = dir_->File("mismatch.png");
  r = RunCommand(Gen("txt2img", "--seed 12 --loop-workers " + c.target(), out, a_->target()));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("put the same file on every worker"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(out));
}

TEST_F(DistributedTest, PlacementNeedsWorkersAndAKnownWord) {
  auto r = RunCommand(Gen("txt2img", "--placement worker", dir_->File("x.png"), ""));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--placement"), std::string::npos) << r.err;
  r = RunCommand(Gen("txt2img", "--placement gpu", dir_->File("x.png"), Pool()));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("say nodes or worker"), std::string::npos) << r.err;
  r = RunCommand(Gen("txt2img", "--loop-workers " + Pool(), dir_->File("x.png"), ""));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--loop-workers applies to distributed runs"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir_->File("x.png")));
}

}  // namespace
}  // namespace sd::testing

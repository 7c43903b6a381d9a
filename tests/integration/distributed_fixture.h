// The distributed tests' fixture: a tiny model in a scratch folder, an init image and a mask, two
// workers shared by the suite (a_, b_), fresh pairs for tests that kill or hold theirs, and the
// sd-graph command lines they run, in-process or on workers.
#pragma once

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <csignal>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/image_util.h"
#include "tests/integration/worker_harness.h"

namespace sd::testing {

inline std::string Models(const TempDir& d) { return d.File("models"); }

// Two fresh workers in a scratch folder of their own, for tests that kill them (or hold their
// calls: `hold` gives each worker --hold-calls RUN/hold-x, RUN/hold-y).
struct FreshPair {
  explicit FreshPair(const std::string& models, bool hold = false) {
    auto extra = [&](const std::string& who) {
      if (!hold) return std::vector<std::string>{};
      std::filesystem::create_directories(run.File("hold-" + who));
      return std::vector<std::string>{"--hold-calls", run.File("hold-" + who)};
    };
    ok = x.Start(models, run.File("x.log"), extra("x")) &&
         y.Start(models, run.File("y.log"), extra("y"));
  }
  std::string targets() const { return x.target() + "," + y.target(); }
  TempDir run;
  WorkerProcess x, y;
  bool ok = false;
};

// A command running in the background; joined (and its result kept) by Wait() or the destructor.
class Background {
 public:
  explicit Background(const std::string& cmd)
      : thread_([this, cmd] { result_ = RunCommand(cmd, &pid_); }) {}
  ~Background() { Wait(); }
  const CommandResult& Wait() {
    if (thread_.joinable()) thread_.join();
    return result_;
  }
  // Sends `sig` to the command's process (started with `exec`, it is the program itself); false
  // when it is not running.
  bool Signal(int sig) {
    while (pid_.load() == 0) std::this_thread::yield();  // until the fork has happened
    const pid_t pid = pid_.load();
    return pid > 0 && ::kill(pid, sig) == 0;
  }

 private:
  std::atomic<pid_t> pid_{0};
  CommandResult result_;
  std::thread thread_;
};

class DistributedTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    std::filesystem::create_directories(Models(*dir_));
    auto r = MakeTestCheckpoint(Models(*dir_) + "/tiny.safetensors");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    // An init image (a tiny-model render) and a mask whose right half is white (repaint).
    r = RunCommand(Gen("txt2img", "--seed 5", dir_->File("init.png"), ""));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    Rgb8 mask{64, 64, std::vector<uint8_t>(64 * 64 * 3, 0)};
    for (int y = 0; y < 64; ++y) {
      for (int x = 32; x < 64; ++x) {
        for (int c = 0; c < 3; ++c) mask.pixels[(y * 64 + x) * 3 + c] = 255;
      }
    }
    ASSERT_TRUE(WriteRgb8(dir_->File("mask.png"), mask));
    a_ = new WorkerProcess();
    b_ = new WorkerProcess();
    ASSERT_TRUE(a_->Start(Models(*dir_), dir_->File("a.log")));
    ASSERT_TRUE(b_->Start(Models(*dir_), dir_->File("b.log")));
  }
  static void TearDownTestSuite() {
    delete a_;
    delete b_;
    delete dir_;
  }

  // An sd-graph command: in-process on models/tiny.safetensors, or on `workers` with the model
  // named "tiny".
  static std::string Gen(const std::string& mode, const std::string& extra, const std::string& out,
                         const std::string& workers, int steps = 4) {
    std::string cmd = SdGraphBin() + " " + mode +
                      " --prompt 'a red fox' --negative 'blurry' --steps " + std::to_string(steps) +
                      " --threads 1 -o " + Quote(out) + " " + extra;
    if (mode == "txt2img") cmd += " --width 64 --height 64";
    if (workers.empty()) return cmd + " --model " + Quote(Models(*dir_) + "/tiny.safetensors");
    return cmd + " --model tiny --workers " + workers;
  }
  static std::string Pool() { return a_->target() + "," + b_->target(); }
  // (mode, flags) for one image of each mode: txt2img with two samplers, img2img and inpaint on
  // the suite's init image and mask.
  static std::vector<std::pair<std::string, std::string>> ModeCases() {
    const std::string init = " --init " + Quote(dir_->File("init.png"));
    return {{"txt2img", "--seed 7"},
            {"txt2img", "--seed 8 --sampler dpmpp_2m --karras"},
            {"img2img", "--seed 9 --strength 0.6" + init},
            {"inpaint", "--seed 10" + init + " --mask " + Quote(dir_->File("mask.png"))}};
  }

  // (node, step) -> which worker ran it, from the workers' logs after the given offsets.
  static std::map<std::pair<std::string, int>, std::string> Placement(
      const std::vector<const WorkerProcess*>& ws, const std::vector<size_t>& from) {
    std::map<std::pair<std::string, int>, std::string> where;
    for (size_t i = 0; i < ws.size(); ++i) {
      for (const auto& e : ws[i]->Events("infer", from[i])) {
        if (e.value("code", "") != "OK") continue;
        // NODE/STEP/SEQ, NODE a flat name ("denoise/eps/unet_cond"): keyed by its last part.
        const std::string id = e.value("id", "");
        const size_t s2 = id.rfind('/'), s1 = id.rfind('/', s2 - 1);
        const std::string flat = id.substr(0, s1);
        const std::string node = flat.substr(flat.rfind('/') + 1);  // npos + 1: all of it
        where[{node, std::stoi(id.substr(s1 + 1, s2 - s1 - 1))}] = ws[i]->target();
      }
    }
    return where;
  }

  inline static TempDir* dir_ = nullptr;
  inline static WorkerProcess* a_ = nullptr;
  inline static WorkerProcess* b_ = nullptr;
};

}  // namespace sd::testing

// sd-rpc-bench: what the distributed runtime costs and gains, with sd-worker processes it starts
// itself on loopback.
//   1. Per-call overhead of a node call on a worker vs in-process, for the payloads SD moves per
//   step: a
//      512x512 image's latents ([1, 4, 64, 64] f32, 64 KiB each way x2) and the CFG pair of text
//      contexts
//      ([2, 77, 768] f32, 462 KiB). The node is CfgCombine (a few microseconds of arithmetic), so
//      the remote time is the protocol: encode, gRPC over loopback, decode, validate. Median and
//      p99.
//   2. Throughput of whole txt2img images on 1 vs 2 CPU workers (tiny model), each worker pinned to
//   its own
//      core with one thread, images submitted `--jobs` at a time.
//   3. Per-step overhead of each loop placement (graph.proto's Placement) against in-process, one
//      small image at a time so that the protocol is what differs: every model call of a step on
//      the two workers (nodes), or the whole loop as one streaming request to one worker (worker).
// Prints a table; --json FILE writes the numbers.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/str_cat.h"
#include "host_plugin/cli/args.h"
#include "host_plugin/runtime/graph.h"
#include "host_plugin/runtime/worker_pool.h"
#include "nodes/base/cpu_block_cache.h"
#include "nodes/base/runtime_info.h"
#include "nodes/base/status_macros.h"
#include "nodes/ops/model_cache.h"
#include "nodes/weights/test_weights.h"
#include "tests/worker_launcher.h"

namespace sd {
namespace {

constexpr char kHelp[] =
    "usage: sd-rpc-bench [--calls N] [--images N] [--steps N] [--size S] [--wire f32,f16] [--json "
    "FILE]\n\n"
    "Starts sd-worker processes on loopback and measures (1) the per-call overhead of remote node "
    "calls vs\n"
    "in-process for 512x512 latents and 2x77x768 contexts, (2) txt2img throughput on 1 vs 2 CPU "
    "workers\n"
    "pinned to separate cores (tiny test model), (3) the per-step overhead of each loop placement "
    "(nodes,\n"
    "worker) against in-process, at --placement-size (tiny test model).\n\n"
    "  --calls N       calls per overhead case (default 300)\n"
    "  --images N      images per throughput run (default 8)\n"
    "  --steps N       sampler steps per image (default 10)\n"
    "  --size S        image side for the throughput run (default 256)\n"
    "  --wire LIST     wire dtypes to measure (default f32,f16)\n"
    "  --placement-size S   image side for the placement run (default 64)\n"
    "  --worker-bin F  the sd-worker to start (default: next to this binary, then the build tree)\n"
    "  --json FILE     also write the results as JSON\n";

std::string ExeDir() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, n).substr(0, std::string(buf, n).rfind('/')) : ".";
}

// Starts sd-worker `name` pinned to `core` (taskset) and waits for its port.
bool StartWorker(testing::WorkerLauncher& w, const std::string& models, const std::string& dir,
                 const char* name, int core) {
  w.set_prefix({"/usr/bin/taskset", "-c", std::to_string(core)});
  // CfgCombine, the protocol probe, computes without a model: not served by default. It carries
  // contexts as [2, 77, 768, 1] "latents", 6144 pixels on a side to the worker's size limit.
  return w.Start(models, absl::StrCat(dir, "/", name, ".log"),
                 {"--preload", "tiny", "--serve-kinds", "all", "--max-image-size", "8192"});
}

struct Timing {
  double median_us = 0, p99_us = 0;
};

Timing Summarize(std::vector<double> us) {
  std::sort(us.begin(), us.end());
  return {us[us.size() / 2], us[std::min(us.size() - 1, us.size() * 99 / 100)]};
}

// 3. One image at a time, `steps` steps at size x size: in-process, then on the workers with each
// placement; the median of 3 timed runs after a warm-up, per step, and its excess over in-process.
absl::Status PlacementOverhead(const Graph& graph, const std::string& models,
                               const std::vector<std::string>& targets, int steps, int size,
                               nlohmann::json& report) {
  struct Case {
    const char* name;
    bool remote;
    v1::Placement placement;
  };
  const Case cases[] = {{"in-process", false, v1::PLACEMENT_UNSPECIFIED},
                        {"nodes (2 workers)", true, v1::NODES},
                        {"worker (1 request)", true, v1::WORKER}};
  std::printf("\nloop placement: txt2img %dx%d, %d steps, one image at a time, tiny model\n", size,
              size, steps);
  std::printf("%-20s %14s %18s\n", "placement", "ms per step", "overhead ms/step");
  double base_ms = 0;
  for (const Case& c : cases) {
    std::unique_ptr<WorkerPool> pool;
    if (c.remote) {
      WorkerPoolOptions po;
      po.targets = targets;
      SD_ASSIGN_OR_RETURN(pool, WorkerPool::Create(po));
      SD_RETURN_IF_ERROR(pool->Prepare("tiny").status());
    }
    RunContext ctx;
    ctx.checkpoint = c.remote ? "tiny" : models + "/tiny.safetensors";
    ctx.models = std::make_shared<ModelCache>();
    RunOptions options;
    options.dispatcher = pool.get();
    options.placement = c.placement;
    const std::map<std::string, Value> in = {{"prompt", std::string("a bench")},
                                             {"seed", int64_t{1}},
                                             {"steps", int64_t{steps}},
                                             {"width", int64_t{size}},
                                             {"height", int64_t{size}}};
    std::vector<double> ms;
    for (int rep = 0; rep < 4; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      SD_RETURN_IF_ERROR(graph.Run(in, ctx, options).status());
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (rep > 0) ms.push_back(s * 1000 / steps);  // the first run loads and warms up
    }
    std::sort(ms.begin(), ms.end());
    const double step_ms = ms[ms.size() / 2];
    if (!c.remote) base_ms = step_ms;
    std::printf("%-20s %14.2f %18.2f\n", c.name, step_ms, step_ms - base_ms);
    report["placement"].push_back({{"placement", c.name},
                                   {"ms_per_step", step_ms},
                                   {"overhead_ms_per_step", step_ms - base_ms}});
  }
  return absl::OkStatus();
}

int Main(int argc, char** argv) {
  auto args = cli::Args::Parse(
      std::vector<std::string>(argv + 1, argv + argc),
      {{"calls", "images", "steps", "size", "wire", "worker-bin", "json", "placement-size"},
       {"help"}});
  if (!args.ok() || args->Has("help")) {
    std::fprintf(args.ok() ? stdout : stderr, "%s%s",
                 args.ok() ? "" : (std::string(args.status().message()) + "\n\n").c_str(), kHelp);
    return args.ok() ? 0 : 2;
  }
  const int calls = std::stoi(args->GetOr("calls", "300"));
  const int images = std::stoi(args->GetOr("images", "8"));
  const int steps = std::stoi(args->GetOr("steps", "10"));
  const int size = std::stoi(args->GetOr("size", "256"));
  std::string bin = args->GetOr("worker-bin", ExeDir() + "/sd-worker");
  if (!std::filesystem::exists(bin)) bin = std::string(SD_BENCH_WORKER_BIN);
  ConfigureThreads(1);

  const std::string dir =
      (std::filesystem::temp_directory_path() / ("sd-rpc-bench-" + std::to_string(::getpid())))
          .string();
  std::filesystem::create_directories(dir + "/models");
  TestCheckpointOptions tiny;
  tiny.config = SdConfig::Tiny();
  if (absl::Status s = WriteTestCheckpoint(dir + "/models/tiny.safetensors", tiny); !s.ok()) {
    std::fprintf(stderr, "sd-rpc-bench: %s\n", s.ToString().c_str());
    return 1;
  }
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  testing::WorkerLauncher a(bin), b(bin);
  if (!StartWorker(a, dir + "/models", dir, "a", 0) ||
      !StartWorker(b, dir + "/models", dir, "b", cores > 1 ? 1 : 0)) {
    std::fprintf(stderr, "sd-rpc-bench: could not start %s\n", bin.c_str());
    return 1;
  }
  nlohmann::json report;
  report["machine"] = {{"cores", cores}, {"blas", LoadedBlas().Describe()}};

  // ---- 1. per-call overhead
  // ------------------------------------------------------------------------
  const NodeKind* kind = *NodeRegistry::Get().Find("CfgCombine");
  const NodeContract contract = kind->contract();
  const google::protobuf::Any no_options;
  std::unique_ptr<NodeKernel> local = kind->create(no_options);
  std::printf("%-22s %-6s %12s %12s %12s %12s\n", "payload", "wire", "local med", "local p99",
              "remote med", "remote p99");
  for (const auto& [label, shape] : std::vector<std::pair<std::string, std::vector<int64_t>>>{
           {"latents 1x4x64x64", {1, 4, 64, 64}}, {"contexts 2x77x768", {2, 77, 768, 1}}}) {
    torch::manual_seed(1);
    std::map<std::string, Value> in = {
        {"cond", torch::randn(shape)}, {"uncond", torch::randn(shape)}, {"scale", 7.5}};
    std::vector<double> local_us;
    for (int i = 0; i < calls; ++i) {
      NodeOutputs out;
      const auto t0 = std::chrono::steady_clock::now();
      c10::InferenceMode guard;
      auto checked = NodeInputs::Check(contract, &in, &label);
      if (checked.ok()) (void)local->Process(*checked, out);
      local_us.push_back(
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    }
    const Timing lt = Summarize(local_us);
    for (const std::string& wire : {std::string("f32"), std::string("f16")}) {
      if (args->GetOr("wire", "f32,f16").find(wire) == std::string::npos) continue;
      WorkerPoolOptions po;
      po.targets = {a.target()};
      po.wire = *ParseWireDType(wire);
      auto pool = WorkerPool::Create(po);
      const std::string node = "cfg", kind_name = "CfgCombine", no_checkpoint;
      NodeCall call{node, kind_name, no_options, contract, in, no_checkpoint, 0};
      std::vector<double> remote_us;
      for (int i = 0; i < calls + 10; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        auto out = (*pool)->Call(call, nullptr);
        const double us =
            std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0)
                .count();
        if (!out.ok()) {
          std::fprintf(stderr, "sd-rpc-bench: %s\n", out.status().ToString().c_str());
          return 1;
        }
        if (i >= 10) remote_us.push_back(us);  // the first calls connect
      }
      const Timing rt = Summarize(remote_us);
      std::printf("%-22s %-6s %10.0fus %10.0fus %10.0fus %10.0fus\n", label.c_str(), wire.c_str(),
                  lt.median_us, lt.p99_us, rt.median_us, rt.p99_us);
      report["overhead"].push_back({{"payload", label},
                                    {"wire", wire},
                                    {"local_median_us", lt.median_us},
                                    {"local_p99_us", lt.p99_us},
                                    {"remote_median_us", rt.median_us},
                                    {"remote_p99_us", rt.p99_us}});
    }
  }

  // ---- 2. throughput on 1 vs 2 workers
  // -------------------------------------------------------------
  auto graph = Graph::Load(std::string(SD_BENCH_GRAPHS_DIR) + "/txt2img.pbtxt");
  if (!graph.ok()) {
    std::fprintf(stderr, "sd-rpc-bench: %s\n", graph.status().ToString().c_str());
    return 1;
  }
  std::printf(
      "\ntxt2img %dx%d, %d steps, %d images, tiny model; workers pinned to cores, 1 thread each\n",
      size, size, steps, images);
  std::printf("%-10s %12s %12s\n", "workers", "seconds", "images/s");
  double rate1 = 0;
  for (int n : {1, 2}) {
    WorkerPoolOptions po;
    po.targets = {a.target()};
    if (n == 2) po.targets.push_back(b.target());
    auto pool = WorkerPool::Create(po);
    if (!pool.ok() || !(*pool)->Prepare("tiny").ok()) {
      std::fprintf(stderr, "sd-rpc-bench: the workers did not load the model\n");
      return 1;
    }
    RunContext ctx;
    ctx.checkpoint = "tiny";
    ctx.models = std::make_shared<ModelCache>();
    std::atomic<int> next{0}, failed{0};
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> runners;
    for (int r = 0; r < n; ++r) {  // one image in flight per worker
      runners.emplace_back([&] {
        for (int i = next++; i < images; i = next++) {
          RunOptions options;
          options.dispatcher = pool->get();
          std::map<std::string, Value> in = {{"prompt", std::string("a bench")},
                                             {"seed", int64_t{i}},
                                             {"steps", int64_t{steps}},
                                             {"width", int64_t{size}},
                                             {"height", int64_t{size}}};
          if (!graph->Run(in, ctx, options).ok()) ++failed;
        }
      });
    }
    for (auto& t : runners) t.join();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (failed) {
      std::fprintf(stderr, "sd-rpc-bench: %d images failed\n", failed.load());
      return 1;
    }
    const double rate = images / s;
    if (n == 1) rate1 = rate;
    std::printf("%-10d %12.2f %12.3f%s\n", n, s, rate,
                n == 2 ? absl::StrCat("   (", rate / rate1, "x of 1 worker)").c_str() : "");
    report["throughput"].push_back({{"workers", n}, {"seconds", s}, {"images_per_s", rate}});
  }
  if (rate1 > 0)
    report["throughput_ratio_2_vs_1"] =
        report["throughput"][1]["images_per_s"].get<double>() / rate1;

  // ---- 3. per-step overhead of each loop placement
  // --------------------------------------------------
  if (absl::Status s = PlacementOverhead(*graph, dir + "/models", {a.target(), b.target()}, steps,
                                         std::stoi(args->GetOr("placement-size", "64")), report);
      !s.ok()) {
    std::fprintf(stderr, "sd-rpc-bench: %s\n", s.ToString().c_str());
    return 1;
  }
  if (auto path = args->Get("json")) std::ofstream(*path) << report.dump(2) << "\n";
  std::filesystem::remove_all(dir);
  return 0;
}

}  // namespace
}  // namespace sd

int main(int argc, char** argv) {
  sd::EnsureFastBlasKernels(argv);  // may re-execute this program with faster OpenBLAS kernels
  sd::InstallCpuBlockCache();       // before any tensor: freed activations stay mapped for reuse
  return sd::Main(argc, argv);
}

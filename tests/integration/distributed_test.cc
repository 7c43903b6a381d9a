// The distributed runtime end to end: real sd-worker processes on loopback, sd-graph --workers,
// tiny model. Distributed images must equal in-process ones (f32, CPU, one thread everywhere: equal
// bytes), the cond and uncond UNet calls of each step must land on different workers, a worker
// killed mid-loop must cost a retry and not the image, and a load of concurrent clients must lose
// or duplicate nothing.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>

#include "nodes/weights/safetensors.h"
#include "nodes/weights/sd_config.h"
#include "tests/integration/distributed_fixture.h"
#include "tests/semantic/image_scorer.h"

namespace sd::testing {
namespace {

TEST_F(DistributedTest, ImagesEqualInProcessAndCfgHalvesRunOnTwoWorkers) {
  for (const auto& [mode, extra] : ModeCases()) {
    SCOPED_TRACE(mode + " " + extra);
    const std::string local = dir_->File("local.png"), remote = dir_->File("remote.png");
    auto r = RunCommand(Gen(mode, extra, local, ""));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const std::vector<size_t> from = {a_->LogSize(), b_->LogSize()};
    r = RunCommand(Gen(mode, extra, remote, Pool()));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const int diff = MaxDiff(ReadRgb8(local), ReadRgb8(remote));
    std::printf("[ distributed ] %s %s: max |diff| vs in-process = %d levels\n", mode.c_str(),
                extra.c_str(), diff);
    EXPECT_EQ(diff, 0) << "f32 on CPU with one thread everywhere: the bytes must be equal";
    auto where = Placement({a_, b_}, from);
    int steps = 0;
    for (int s = 1; where.count({"unet_cond", s}); ++s) {
      ASSERT_TRUE(where.count({"unet_uncond", s})) << "step " << s;
      const std::string cond = where[{"unet_cond", s}], uncond = where[{"unet_uncond", s}];
      EXPECT_NE(cond, uncond) << "step " << s << ": both halves on one worker";
      ++steps;
    }
    EXPECT_GT(steps, 0);
  }
}

// A ComfyUI workflow (img2img from a LoadImage at denoise 0.7, ancestral sampling): the workflow's
// checkpoint name is the workers' model name; the image is the in-process one, the CFG halves
// apart.
TEST_F(DistributedTest, ComfyWorkflowEqualsInProcess) {
  const std::string workflow = dir_->File("img2img.json");
  WriteFile(workflow, R"({
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
    "2": {"class_type": "LoadImage", "inputs": {"image": "init.png"}},
    "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 2]}},
    "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a (red:1.2) fox", "clip": ["1", 1]}},
    "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
    "6": {"class_type": "KSampler", "inputs": {"seed": 3, "steps": 5, "cfg": 7, "sampler_name": "euler_ancestral",
          "scheduler": "karras", "denoise": 0.7, "model": ["1", 0], "positive": ["4", 0], "negative": ["5", 0],
          "latent_image": ["3", 0]}},
    "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
    "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "x"}}})");
  const std::string local = dir_->File("comfy_local.png"), remote = dir_->File("comfy_remote.png");
  const std::string run = SdGraphBin() + " run " + Quote(workflow) + " --threads 1 -o ";
  auto r = RunCommand(run + Quote(local) + " --comfy-models " + Quote(Models(*dir_)));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<size_t> from = {a_->LogSize(), b_->LogSize()};
  r = RunCommand(run + Quote(remote) + " --workers " + Pool());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(MaxDiff(ReadRgb8(local), ReadRgb8(remote)), 0);
  auto where = Placement({a_, b_}, from);
  const std::pair<std::string, int> cond{"6_cond", 1}, uncond{"6_uncond", 1};
  ASSERT_TRUE(where.count(cond) && where.count(uncond));
  EXPECT_NE(where[cond], where[uncond]);
}

// A long prompt (three chunks against a one-chunk negative), weighting in both dialects, clip skip
// and a textual-inversion word: the chunks, weights and vectors go to the workers as tensors, and
// the image is the in-process one.
TEST_F(DistributedTest, LongWeightedPromptsWithEmbeddingsEqualInProcess) {
  const std::string emb = dir_->File("embeddings");
  std::filesystem::create_directories(emb);
  const int64_t width = SdConfig::Tiny().clip.width;
  std::vector<float> vectors(static_cast<size_t>(3 * width));
  for (size_t i = 0; i < vectors.size(); ++i) vectors[i] = static_cast<float>((i % 17) - 8) / 8.0f;
  ASSERT_TRUE(WriteSafetensors(
                  emb + "/foxstyle.safetensors",
                  {{"emb_params", DType::kF32, {3, width}, vectors.data(), vectors.size() * 4, {}}})
                  .ok());
  std::string prompt = "a (red:1.3) foxstyle fox, [blurry] BREAK";
  for (int i = 0; i < 30; ++i) prompt += " ((sharp)) detailed fur,";
  for (const std::string weighting : {"a1111", "comfy"}) {
    SCOPED_TRACE(weighting);
    const std::string extra = "--seed 12 --clip-skip 2 --weighting " + weighting +
                              " --embeddings " + Quote(emb) + " --prompt " + Quote(prompt);
    const std::string local = dir_->File("long-local.png"), remote = dir_->File("long-remote.png");
    auto r = RunCommand(Gen("txt2img", extra, local, ""));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    r = RunCommand(Gen("txt2img", extra, remote, Pool()));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(MaxDiff(ReadRgb8(local), ReadRgb8(remote)), 0);
  }
  // An embedding of another width is refused before anything runs, naming its file, as in-process
  // (the workers report their text encoder's width).
  std::vector<float> wide(static_cast<size_t>(width + 8), 0.5f);
  ASSERT_TRUE(WriteSafetensors(
                  emb + "/widestyle.safetensors",
                  {{"emb_params", DType::kF32, {1, width + 8}, wide.data(), wide.size() * 4, {}}})
                  .ok());
  auto r = RunCommand(Gen("txt2img", "--embeddings " + Quote(emb) + " --prompt 'a widestyle fox'",
                          dir_->File("wide.png"), Pool()));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("widestyle.safetensors has vectors of width"), std::string::npos) << r.err;
}

// --vae NAME: a standalone VAE in the workers' repositories; the pool agrees on the pair's hash and
// the image is the in-process one. A VAE only one worker has cannot be used.
TEST_F(DistributedTest, StandaloneVaeByNameEqualsInProcess) {
  const std::string repo = Models(*dir_);
  ASSERT_EQ(std::system((PythonScript("make_vae_variants.py") + " " +
                         Quote(repo + "/tiny.safetensors") + " " + Quote(repo))
                            .c_str()),
            0);
  const std::string local = dir_->File("vae-local.png"), remote = dir_->File("vae-remote.png");
  auto r =
      RunCommand(Gen("txt2img", "--seed 13 --vae " + Quote(repo + "/vae.safetensors"), local, ""));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = RunCommand(Gen("txt2img", "--seed 13 --vae vae.safetensors", remote, Pool()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(MaxDiff(ReadRgb8(local), ReadRgb8(remote)), 0);
  // The stock graph's ApplyVae node (--set vae=NAME): the same image, the VAE recorded.
  r = RunCommand(Gen("txt2img", "--seed 13 --set vae=vae.safetensors", remote, Pool()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(MaxDiff(ReadRgb8(local), ReadRgb8(remote)), 0);
  EXPECT_NE(ReadFile(remote).find("VAE: vae.safetensors"), std::string::npos);
  r = RunCommand(Gen("txt2img", "--seed 13 --vae nowhere.safetensors", remote, Pool()));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("nowhere.safetensors"), std::string::npos) << r.err;
}

// --lora NAME through workers: each resolves it in its repository and applies it; the image is the
// in-process one and the PNG records the LoRA's hash.
TEST_F(DistributedTest, LoraByNameEqualsInProcess) {
  const std::string repo = Models(*dir_);
  WriteFile(repo + "/lora-cfg.json",
            "{\"num_res_blocks\": " + std::to_string(SdConfig::Tiny().unet.num_res_blocks) +
                ", \"attention\": [], \"keys\": []}");
  ASSERT_EQ(std::system((PythonScript("lora_reference.py") + " make " +
                         Quote(repo + "/tiny.safetensors") + " " + Quote(repo + "/lora-cfg.json") +
                         " " + Quote(repo) + " 1 1")
                            .c_str()),
            0);
  const std::string local = dir_->File("lora-local.png"), remote = dir_->File("lora-remote.png");
  auto r = RunCommand(Gen(
      "txt2img", "--seed 14 --lora " + Quote(repo + "/ldm.safetensors") + ":0.6:0.9", local, ""));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = RunCommand(Gen("txt2img", "--seed 14 --lora ldm.safetensors:0.6:0.9", remote, Pool()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(MaxDiff(ReadRgb8(local), ReadRgb8(remote)), 0);
  const std::string png = ReadFile(remote);
  EXPECT_NE(png.find("Lora hashes"), std::string::npos);
  // The stock graph's ApplyLora node (--set lora=NAME): the same image, with the loop's calls
  // sent one by one or the loop sent whole to a worker.
  for (const std::string placement : {"nodes", "worker"}) {
    const std::string node = dir_->File("lora-node-" + placement + ".png");
    r = RunCommand(Gen("txt2img",
                       "--seed 14 --set lora=ldm.safetensors:0.6:0.9 --placement " + placement,
                       node, Pool()));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(MaxDiff(ReadRgb8(local), ReadRgb8(node)), 0) << placement;
    EXPECT_NE(ReadFile(node).find("Lora hashes: \"ldm: "), std::string::npos) << placement;
  }
}

// ControlNets by name in the workers' repositories (two at once, one in the diffusers layout): the
// in-process image, the CFG halves (ControlNet and UNet) apart, the ControlNets run on workers, and
// the parameters record them; with --wire-dtype bf16 the residuals travel as bf16 and the image
// stays close.
TEST_F(DistributedTest, ControlNetsByNameEqualInProcess) {
  const std::string repo = Models(*dir_);
  for (const char* layout : {"original", "diffusers"}) {
    auto r = RunCommand(SdGraphBin() + " make-test-checkpoint " +
                        Quote(repo + "/cn-" + layout + ".safetensors") +
                        " --tiny --controlnet --layout " + layout);
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  const std::string hints = " --hint " + Quote(dir_->File("init.png")) + " --hint " +
                            Quote(dir_->File("mask.png")) +
                            " --control-strength 0.7 --control-strength 0.5 --control-end 0.8";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"txt2img", "--seed 15"},
      {"img2img", "--seed 16 --strength 0.7 --init " + Quote(dir_->File("init.png"))}};
  for (const auto& [mode, extra] : cases) {
    SCOPED_TRACE(mode);
    const std::string local = dir_->File("cn-local.png"), remote = dir_->File("cn-remote.png");
    auto r =
        RunCommand(Gen(mode,
                       extra + " --controlnet " + Quote(repo + "/cn-original.safetensors") +
                           " --controlnet " + Quote(repo + "/cn-diffusers.safetensors") + hints,
                       local, ""));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const std::vector<size_t> from = {a_->LogSize(), b_->LogSize()};
    r = RunCommand(
        Gen(mode, extra + " --controlnet cn-original.safetensors --controlnet cn-diffusers" + hints,
            remote, Pool()));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(MaxDiff(ReadRgb8(local), ReadRgb8(remote)), 0);
    auto where = Placement({a_, b_}, from);
    ASSERT_TRUE(where.count(std::make_pair(std::string("control_cond"), 1)) &&
                where.count(std::make_pair(std::string("control_uncond_1"), 1)));
    EXPECT_NE(where[std::make_pair(std::string("unet_cond"), 1)],
              where[std::make_pair(std::string("unet_uncond"), 1)]);
    const std::string png = ReadFile(local);
    EXPECT_NE(png.find("ControlNet 1: \"module: none, model: cn-diffusers ("), std::string::npos);
    EXPECT_NE(png.find("weight: 0.5, starting/ending: (0, 0.8)"), std::string::npos);
  }
  const std::string bf16 = dir_->File("cn-bf16.png"), f32 = dir_->File("cn-f32.png");
  const std::string args =
      "--seed 17 --controlnet cn-original --hint " + Quote(dir_->File("init.png"));
  auto r = RunCommand(Gen("txt2img", args, f32, Pool()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = RunCommand(Gen("txt2img", args + " --wire-dtype bf16", bf16, Pool()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const int diff = MaxDiff(ReadRgb8(f32), ReadRgb8(bf16));
  std::printf("[ distributed ] ControlNet with bf16 wire: max |diff| vs f32 wire = %d levels\n",
              diff);
  EXPECT_LE(diff, 16);
}

// The cond and uncond UNet calls of a step are in flight at the same time, on two workers: with
// every call held on arrival (--hold-calls), both halves of step 1 arrive, one on each worker,
// before either is let go. Run one at a time, the second could never arrive while the first is
// held.
// Without --model both sides use the shipped demo model (the workers serve it by name although
// their repository lacks it) at its native size: the same bytes, and a picture of what was asked
// for.
TEST_F(DistributedTest, DemoModelByDefaultEqualsInProcessAndShowsThePrompt) {
  const std::string cmd = SdGraphBin() +
                          " txt2img --prompt 'a red circle on a blue background' --seed 3 "
                          "--steps 20 --sampler dpmpp_2m --karras --threads 1 -o ";
  const std::string local = dir_->File("demo-local.png"), remote = dir_->File("demo-remote.png");
  auto r = RunCommand(cmd + Quote(local));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("using the demo model"), std::string::npos) << r.err;
  r = RunCommand(cmd + Quote(remote) + " --workers " + Pool());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Rgb8 a = ReadRgb8(local), b = ReadRgb8(remote);
  EXPECT_EQ(a.width, 64);
  EXPECT_EQ(MaxDiff(a, b), 0);
  const demo::ImageScore s = demo::ScoreImage(b.pixels, b.width, b.height);
  EXPECT_EQ(s.foreground, demo::ColourIndex("red")) << s.Describe();
  EXPECT_EQ(s.background, demo::ColourIndex("blue")) << s.Describe();
}

TEST_F(DistributedTest, CfgHalvesAreInFlightTogetherOnTwoWorkers) {
  FreshPair p(Models(*dir_), /*hold=*/true);
  ASSERT_TRUE(p.ok);
  Background client(Gen("txt2img", "--seed 12", p.run.File("held.png"), p.targets(), 2));
  const std::string dirs[2] = {p.run.File("hold-x"), p.run.File("hold-y")};
  std::map<std::string, int> unet_step1;  // node -> which worker holds it (steps count from 1)
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(2);
  std::set<std::string> seen;
  while (unet_step1.size() < 2 && std::chrono::steady_clock::now() < deadline) {
    for (int i = 0; i < 2; ++i) {
      for (const auto& f : std::filesystem::directory_iterator(dirs[i])) {
        const std::string name = f.path().filename().string();
        const size_t dot = name.rfind(".arrived");
        if (dot == std::string::npos || dot + 8 != name.size()) continue;
        const std::string id = name.substr(0, dot);  // NODE@STEP@SEQ
        seen.insert(id);
        // The flat node name's '/' are '@' in file names too: ...@eps@unet_cond@1@SEQ.
        if (id.find("@unet_cond@1@") != std::string::npos) {
          unet_step1["unet_cond"] = i;
        } else if (id.find("@unet_uncond@1@") != std::string::npos) {
          unet_step1["unet_uncond"] = i;
        } else {
          WriteFile(dirs[i] + "/" + id + ".go", "");  // the prompts' encodings go on
        }
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (const std::string& d : dirs) WriteFile(d + "/release", "");  // whatever happens, let it end
  ASSERT_EQ(unet_step1.size(), 2u)
      << "both halves of step 1 were never in flight at once; calls seen: "
      << ::testing::PrintToString(seen);
  EXPECT_NE(unet_step1["unet_cond"], unet_step1["unet_uncond"]) << "on two different workers";
  const CommandResult& r = client.Wait();
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST_F(DistributedTest, BatchSpreadsOverThePoolAndMatchesInProcess) {
  const std::vector<size_t> from = {a_->LogSize(), b_->LogSize()};
  auto r = RunCommand(Gen("txt2img", "--seed 20 --batch 4", dir_->File("batch.png"), Pool()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = RunCommand(Gen("txt2img", "--seed 20 --batch 4", dir_->File("batch_local.png"), ""));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (int i = 1; i <= 4; ++i) {
    EXPECT_EQ(MaxDiff(ReadRgb8(dir_->File("batch-" + std::to_string(i) + ".png")),
                      ReadRgb8(dir_->File("batch_local-" + std::to_string(i) + ".png"))),
              0)
        << "image " << i;
  }
  // 4 images x 4 steps x 2 halves, each exactly once, over both workers.
  const size_t on_a = a_->Events("infer", from[0]).size(),
               on_b = b_->Events("infer", from[1]).size();
  EXPECT_GT(on_a, 0u);
  EXPECT_GT(on_b, 0u);
  size_t unet = 0;
  for (const auto* w : {a_, b_}) {
    for (const auto& e : w->Events("infer", w == a_ ? from[0] : from[1]))
      unet += e.value("kind", "") == "UNetStep";
  }
  EXPECT_EQ(unet, 4u * 4u * 2u);
}

TEST_F(DistributedTest, DnsTargetSpreadsOverTheResolvedAddresses) {
  // dns:///NAME:PORT is how a Kubernetes headless service is reached: gRPC resolves NAME and
  // spreads calls round-robin over its addresses. Here NAME is localhost (one worker behind it).
  const std::vector<size_t> from = {a_->LogSize()};
  auto r = RunCommand(Gen("txt2img", "--seed 70", dir_->File("dns.png"),
                          "dns:///localhost:" + std::to_string(a_->port())));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto local = RunCommand(Gen("txt2img", "--seed 70", dir_->File("dns_local.png"), ""));
  ASSERT_EQ(local.exit_code, 0) << local.err;
  EXPECT_EQ(MaxDiff(ReadRgb8(dir_->File("dns.png")), ReadRgb8(dir_->File("dns_local.png"))), 0);
  EXPECT_FALSE(a_->Events("infer", from[0]).empty());
}

TEST_F(DistributedTest, MetricsCountCallsAndModels) {
  // A run of its own first: the test does not rely on what earlier tests sent to the pool.
  auto r = RunCommand(Gen("txt2img", "--seed 90", dir_->File("metrics.png"), Pool(), 2));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string m = a_->Metrics();
  EXPECT_NE(m.find("sd_worker_requests_total{"), std::string::npos) << m;
  EXPECT_NE(m.find("kind=\"UNetStep\""), std::string::npos);
  // At least this run's CLIP, UNet and VAE (tests before this one may have loaded the demo model
  // and ControlNets too).
  const double loaded = MetricValue(m, "sd_worker_loaded_models");
  EXPECT_GE(loaded, 3);
  EXPECT_EQ(MetricValue(m, "sd_worker_serving"), 1);
  EXPECT_EQ(MetricValue(m, "sd_worker_queue_depth"), 0);
  EXPECT_GT(MetricValue(m, "sd_worker_resident_memory_bytes"), 0);
}

// A full queue is "busy", not "broken": one worker computing one call at a time with no queue, two
// images at once, and every refused call is retried with backoff until it runs (before, the pool
// gave the worker up for that call and failed after 5 s).
TEST_F(DistributedTest, BusyWorkerIsWaitedForWithBackoff) {
  TempDir run;
  WorkerProcess solo;
  ASSERT_TRUE(
      solo.Start(Models(*dir_), run.File("solo.log"), {"--concurrency", "1", "--queue", "0"}));
  auto r = RunCommand(
      Gen("txt2img", "--seed 3 --batch 2 --parallel 2", run.File("busy.png"), solo.target()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(std::filesystem::exists(run.File("busy-1.png")));
  EXPECT_TRUE(std::filesystem::exists(run.File("busy-2.png")));
  // Two images' calls met a worker that takes one at a time: some were refused, and all ran.
  EXPECT_GT(solo.Events("queue_full").size(), 0u);
  EXPECT_EQ(r.err.find("is down"), std::string::npos) << "a busy worker is not marked down";
}

// A request that cannot fit (a response over the message limit) is permanent: exit 2 at once,
// FAILED_PRECONDITION, not "retry later" after trying every worker.
TEST_F(DistributedTest, RequestThatCannotFitIsPermanent) {
  // The decoded 1024x1024 image is 12 MiB in f32: over a 1 MB limit on the host's side.
  auto r = RunCommand(SdGraphBin() +
                      " txt2img --prompt x --steps 1 --threads 1 --width 1024 --height 1024" +
                      " --max-message-mb 1 --model tiny --workers " + Pool() + " -o " +
                      Quote(dir_->File("toolarge.png")));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("FAILED_PRECONDITION"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("cannot run"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir_->File("toolarge.png")));
}

TEST_F(DistributedTest, MissingModelIsPermanentAndUnknownWorkersRetryable) {
  auto r = RunCommand(SdGraphBin() + " txt2img --model nosuchmodel --workers " + Pool() +
                      " --prompt x -o " + Quote(dir_->File("x.png")));
  EXPECT_EQ(r.exit_code, 3) << r.err;  // NOT_FOUND: do not retry
  EXPECT_NE(r.err.find("no model 'nosuchmodel'"), std::string::npos) << r.err;
  r = RunCommand(SdGraphBin() + " txt2img --model tiny --workers nonsense --prompt x -o " +
                 Quote(dir_->File("x.png")));
  EXPECT_EQ(r.exit_code, 2) << r.err;
}

TEST_F(DistributedTest, WorkersWithDifferentFilesAreRefused) {
  TempDir other;
  std::filesystem::create_directories(Models(other));
  // Same name, other content: the 9-channel tiny model.
  auto r = RunCommand(SdGraphBin() + " make-test-checkpoint " +
                      Quote(Models(other) + "/tiny.safetensors") + " --tiny --inpaint");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  WorkerProcess c;
  ASSERT_TRUE(c.Start(Models(other), other.File("c.log")));
  r = RunCommand(Gen("txt2img", "", dir_->File("mix.png"), a_->target() + "," + c.target()));
  EXPECT_EQ(r.exit_code, 2) << r.err;  // FAILED_PRECONDITION: a configuration error
  EXPECT_NE(r.err.find("workers disagree on model 'tiny'"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir_->File("mix.png")));
}

// Kills one of two workers after it has answered `after` UNet calls; the run must finish on the
// other with the in-process image. Then the killed worker is restarted on its port and must be used
// again.
TEST_F(DistributedTest, WorkerKilledMidLoopCostsARetryNotTheImage) {
  struct Case {
    int seed, steps, after;
  };
  for (const Case& c : {Case{31, 24, 3}, Case{32, 30, 11}, Case{33, 20, 1}}) {
    SCOPED_TRACE("seed " + std::to_string(c.seed) + ", kill after " + std::to_string(c.after));
    FreshPair p(Models(*dir_));
    ASSERT_TRUE(p.ok);
    const std::string extra = "--seed " + std::to_string(c.seed) + " --width 256 --height 256";
    auto local = RunCommand(Gen("txt2img", extra, p.run.File("local.png"), "", c.steps));
    ASSERT_EQ(local.exit_code, 0) << local.err;
    // The distributed run in the background; the victim dies once it has answered `after` UNet
    // calls.
    Background client(Gen("txt2img", extra, p.run.File("remote.png"), p.targets(), c.steps));
    bool killed = false;
    for (int i = 0; i < 3000 && !killed; ++i) {
      int unet = 0;
      for (const auto& e : p.x.Events("infer")) unet += e.value("kind", "") == "UNetStep";
      if (unet >= c.after) {
        p.x.Kill(SIGKILL);
        killed = true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    const CommandResult& result = client.Wait();
    ASSERT_TRUE(killed);
    ASSERT_EQ(result.exit_code, 0) << result.err;
    EXPECT_EQ(MaxDiff(ReadRgb8(p.run.File("local.png")), ReadRgb8(p.run.File("remote.png"))), 0);
    EXPECT_NE(result.err.find("is down"), std::string::npos);

    // Restarted on the same port: the next run uses it again.
    ASSERT_TRUE(p.x.Restart());
    const size_t from = p.x.LogSize();
    auto again = RunCommand(Gen("txt2img", extra, p.run.File("again.png"), p.targets(), 4));
    ASSERT_EQ(again.exit_code, 0) << again.err;
    EXPECT_FALSE(p.x.Events("infer", from).empty()) << "the restarted worker was not used";
  }
}

TEST_F(DistributedTest, RestartedWorkerRejoinsARunningPool) {
  // x is killed mid-run and restarted; y holds its calls (--hold-calls) once x is dead, so the run
  // cannot end before the pool's health watch has brought x back (its log shows the model loaded
  // again); then y lets its calls go and x must serve some of the steps left. Synchronised on the
  // workers' logs and hold files, not on how long anything takes.
  TempDir run;
  const std::string hold = run.File("hold-y");
  std::filesystem::create_directories(hold);
  WorkerProcess x, y;
  ASSERT_TRUE(x.Start(Models(*dir_), run.File("x.log")));
  ASSERT_TRUE(y.Start(Models(*dir_), run.File("y.log"), {"--hold-calls", hold}));
  Background client(
      Gen("txt2img", "--seed 40", run.File("out.png"), x.target() + "," + y.target(), 20));
  // Let y's calls through until x has answered a few.
  auto pump = [&] {
    for (const auto& f : std::filesystem::directory_iterator(hold)) {
      const std::string name = f.path().string();
      if (name.size() > 8 && name.compare(name.size() - 8, 8, ".arrived") == 0) {
        WriteFile(name.substr(0, name.size() - 8) + ".go", "");
      }
    }
  };
  while (x.Events("infer").size() < 4) {
    pump();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  x.Kill(SIGKILL);
  const size_t before_restart = x.LogSize();
  ASSERT_TRUE(x.Restart());
  const size_t from = before_restart;
  while (x.Events("model_loaded", from).empty())
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  WriteFile(hold + "/release", "");
  const CommandResult& result = client.Wait();
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.err.find("joined"), std::string::npos) << result.err;
  EXPECT_FALSE(x.Events("infer", from).empty())
      << "the restarted worker did not rejoin the running pool";
}

TEST_F(DistributedTest, AllWorkersGoneIsUnavailableAndLeavesNoFile) {
  FreshPair p(Models(*dir_));
  ASSERT_TRUE(p.ok);
  const TempDir& run = p.run;
  WorkerProcess& x = p.x;
  Background client(
      Gen("txt2img", "--seed 50 --width 256 --height 256", run.File("out.png"), p.targets(), 200));
  while (p.x.Events("infer").size() + p.y.Events("infer").size() < 6)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  p.x.Kill(SIGKILL);
  p.y.Kill(SIGKILL);
  const CommandResult& result = client.Wait();
  EXPECT_EQ(result.exit_code, 75) << result.err;  // retryable
  EXPECT_NE(result.err.find("UNAVAILABLE"), std::string::npos) << result.err;
  for (const auto& f : std::filesystem::directory_iterator(run.path())) {
    EXPECT_EQ(f.path().extension().string().find(".png"), std::string::npos)
        << "left behind: " << f.path();
    EXPECT_EQ(f.path().filename().string().find("out"), std::string::npos)
        << "left behind: " << f.path();
  }
  // Nothing listening from the start: also retryable.
  auto r = RunCommand(Gen("txt2img", "", run.File("never.png"), x.target()));
  EXPECT_EQ(r.exit_code, 75) << r.err;
}

TEST_F(DistributedTest, SigtermCancelsADistributedRun) {
  TempDir run;
  const std::string out = run.File("cancelled.png");
  const std::string cmd = Gen("txt2img", "--seed 60 --width 256 --height 256", out, Pool(), 400);
  const size_t from = a_->LogSize() + 0;
  Background client("exec " + cmd);
  while (a_->Events("infer", from).size() < 4)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_TRUE(client.Signal(SIGTERM));  // the sd-graph this test started, by its PID
  const CommandResult& result = client.Wait();
  EXPECT_EQ(result.exit_code, 130) << result.err;
  EXPECT_FALSE(std::filesystem::exists(out));
  // The workers are fine and serve the next run.
  auto r = RunCommand(Gen("txt2img", "--seed 61", run.File("after.png"), Pool(), 2));
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST_F(DistributedTest, FourClientsTenJobsEachLoseAndDuplicateNothing) {
  FreshPair p(Models(*dir_));
  ASSERT_TRUE(p.ok);
  const TempDir& run = p.run;
  WorkerProcess &x = p.x, &y = p.y;
  const std::string pool = p.targets();
  constexpr int kClients = 4, kJobs = 10, kSteps = 3;
  auto round = [&](const std::string& tag) {
    std::vector<std::thread> clients;
    std::vector<int> codes(kClients, -1);
    const auto t0 = std::chrono::steady_clock::now();
    for (int c = 0; c < kClients; ++c) {
      clients.emplace_back([&, c] {
        const std::string out = run.File(tag + "_c" + std::to_string(c) + "_%04d.png");
        codes[c] = RunCommand(SdGraphBin() + " run " +
                              Quote(std::string(SD_TEST_GRAPHS_DIR) + "/txt2img.pbtxt") +
                              " --model tiny --workers " + pool + " --frames 1-" +
                              std::to_string(kJobs) + " --seed " + std::to_string(100 * c) +
                              " --set prompt=load --set steps=" + std::to_string(kSteps) +
                              " --set width=64 --set height=64 -o " + Quote(out))
                       .exit_code;
      });
    }
    for (auto& t : clients) t.join();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (int c = 0; c < kClients; ++c) EXPECT_EQ(codes[c], 0) << "client " << c;
    return s;
  };
  round("warm");  // models loaded, allocator warm
  const uint64_t rss_x = x.Rss(), rss_y = y.Rss();
  const size_t from_x = x.LogSize(), from_y = y.LogSize();
  const double seconds = round("load");
  int files = 0;
  for (int c = 0; c < kClients; ++c) {
    for (int j = 1; j <= kJobs; ++j) {
      char name[64];
      std::snprintf(name, sizeof(name), "load_c%d_%04d.png", c, j);
      files += std::filesystem::exists(run.File(name));
    }
  }
  EXPECT_EQ(files, kClients * kJobs);
  // Exactly one OK UNet call per image, step and half: nothing lost, nothing done twice.
  std::multiset<std::string> ids;
  size_t unet = 0;
  for (const auto& [w, from] :
       {std::pair<const WorkerProcess*, size_t>{&x, from_x}, {&y, from_y}}) {
    for (const auto& e : w->Events("infer", from)) {
      if (e.value("kind", "") == "UNetStep" && e.value("code", "") == "OK") ++unet;
    }
  }
  EXPECT_EQ(unet, static_cast<size_t>(kClients * kJobs * kSteps * 2));
  const double growth_x = (double(x.Rss()) - double(rss_x)) / (1 << 20),
               growth_y = (double(y.Rss()) - double(rss_y)) / (1 << 20);
  std::printf(
      "[ load ] %d clients x %d jobs on 2 workers: %.2f s, %.2f images/s; worker RSS growth %.1f / "
      "%.1f MiB\n",
      kClients, kJobs, seconds, kClients * kJobs / seconds, growth_x, growth_y);
  EXPECT_LT(growth_x, 32.0);
  EXPECT_LT(growth_y, 32.0);
}

}  // namespace
}  // namespace sd::testing

// sd-bench: times the three networks of SD v1.x at a given image size, per compute dtype, with peak
// memory. Runs on a checkpoint it is given, or on a full-size sdgold-v1 checkpoint it generates
// (the weights are deterministic test values: the timing is that of the real model). Prints a
// table; --json writes the numbers for comparisons across runs.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "host_plugin/cli/args.h"
#include "nodes/base/cpu_block_cache.h"
#include "nodes/base/file_util.h"
#include "nodes/base/runtime_info.h"
#include "nodes/base/status_macros.h"
#include "nodes/kernels/attention_cpu.h"
#include "nodes/kernels/cpu_rates.h"
#include "nodes/models/batched_matmul.h"
#include "nodes/models/clip_text.h"
#include "nodes/models/conv_layout.h"
#include "nodes/models/int8_conv.h"
#include "nodes/models/int8_linear.h"
#include "nodes/models/layers.h"
#include "nodes/models/model_util.h"
#include "nodes/models/onednn_conv.h"
#include "nodes/models/unet.h"
#include "nodes/models/vae.h"
#include "nodes/models/winograd_conv.h"
#include "nodes/weights/checkpoint.h"
#include "nodes/weights/test_weights.h"
#include "tests/bench/bench_report.h"
#include "tests/bench/controlnet_case.h"
#include "tests/bench/lora_case.h"
#include "tests/bench/op_profile.h"
#include "tests/bench/reference_case.h"
#include "tests/golden/golden_util.h"
#include "tests/test_util.h"

namespace sd {
namespace {

constexpr char kHelp[] =
    "usage: sd-bench [--model CKPT] [--size 512] [--dtypes f32,bf16] [--cases "
    "clip,unet1,unet2,control1,control2,unet1_control,vae_dec,vae_enc,txt2img,lora,\n"
    "                vae_dec_nchw,vae_dec_nhwc,vae_dec_winograd]\n"
    "                [--controlnet FILE]\n"
    "                [--repeat N] [--threads N] [--device cpu|cuda] [--json FILE] [--profile] "
    "[--golden DIR]\n"
    "                [--reference]\n"
    "\n"
    "Times CLIP text encoding (batch 2), one UNet evaluation at batch 1 and 2 (batch 2 is one CFG "
    "step), and\n"
    "the VAE decoder and encoder at SIZE x SIZE pixels, in each compute dtype, and reports the "
    "peak resident\n"
    "memory of each. Without --model it generates a full-size SD v1.5 checkpoint of sdgold-v1 test "
    "weights in\n"
    "$TMPDIR (4.3 GB, removed afterwards), and then also reports each dtype's error against the "
    "fp32 "
    "reference\n"
    "goldens (max-abs and relative, CLIP, UNet at three timesteps and a non-square latent, VAE "
    "decoder).\n"
    "It counts the FLOPs of one UNet evaluation at batch 2 (one CFG step) and reports GFLOP/s, "
    "next to "
    "this CPU's\n"
    "measured fp32 FMA and bf16 dot-product peaks.\n"
    "The txt2img case runs `sd-graph txt2img` (2 steps, SIZE x SIZE) in a child process on an fp16 "
    "copy of "
    "the checkpoint\n"
    "(what most downloads are) in each dtype and reports its peak resident memory against the "
    "bytes of "
    "the weights\n"
    "in that dtype.\n"
    "The ControlNet cases time a ControlNet (--controlnet FILE, else a generated sdgold-v1 one for "
    "the\n"
    "checkpoint's UNet, 1.4 GB at SD v1.5 size) at batch 1 and 2 with its hint at SIZE x SIZE, and "
    "one\n"
    "UNet evaluation at batch 1 that adds its residuals.\n"
    "The lora case writes a rank-64 LoRA (every UNet linear and convolution but the time "
    "embedding) and "
    "times\n"
    "building the UNet plain and then with it applied (read, merged in fp32, cached), with "
    "resident "
    "memory.\n"
    "\n"
    "  --model CKPT    .safetensors or .ckpt to load (SD v1.x)\n"
    "  --size S        image side in pixels, a multiple of 64 (default 512)\n"
    "  --dtypes LIST   compute dtypes: f32, bf16, f16 (default f32,bf16; f16 is meant for CUDA); "
    "on a CPU,\n"
    "                  bf16-native and bf16-f32 force how bf16 weights compute (plain bf16: the "
    "automatic\n"
    "                  choice sd-graph makes, see SD_CPU_BF16 in the README); q8: f32 with the "
    "UNet's 3x3\n"
    "                  convolutions and, with VNNI, feed-forward projections in int8 (sd-graph "
    "--dtype q8;\n"
    "                  DNNL_MAX_CPU_ISA=AVX2 runs oneDNN's AVX2 kernels on a newer CPU)\n"
    "  --cases LIST    which cases to run (default: all but vae_dec_nchw, vae_dec_nhwc and\n"
    "                  vae_dec_winograd: the VAE decoder with every convolution direct in one "
    "layout,\n"
    "                  or every 3x3 one by Winograd, where vae_dec does what was measured faster "
    "on\n"
    "                  this CPU, or what SD_CPU_CONV_LAYOUT and SD_CPU_WINOGRAD say)\n"
    "  --repeat N      timed runs per case after one untimed warm-up for cases under 2 s (default "
    "1;\n"
    "                  the median is reported)\n"
    "  --threads N     ATen intra-op threads (default: all cores)\n"
    "  --device D      cpu (default) or cuda\n"
    "  --json FILE     also write the results as JSON\n"
    "  --profile       after the timings, run one UNet evaluation (batch 2) and one VAE decode "
    "per dtype\n"
    "                  under an operator profiler and print the top operators by self time, the "
    "FLOPs of one\n"
    "                  CFG step and the GFLOP/s of the timed batch-2 runs\n"
    "  --golden DIR    the golden vectors (default: shared/golden of the checkout; "
    "SDGRAPH_SHARED_DIR/golden "
    "overrides)\n"
    "                  With --model the error table is printed only when --golden is given, and "
    "means\n"
    "                  something only if CKPT holds the sdgold-v1 weights (`sd-graph "
    "make-test-checkpoint\n"
    "                  OUT` writes them): a kept copy saves generating them for every run\n"
    "  --reference     after the cases, run the reference beside (tests/bench/reference_sd.py: the "
    "original\n"
    "                  PyTorch implementation's arithmetic, fp32, same checkpoint, threads and "
    "size; it\n"
    "                  checks itself against the goldens when they apply) and print our time "
    "over its\n"
    "                  for unet2 (one CFG step) and vae_dec, per dtype\n";

// sd-graph: the one built with this benchmark, else the one next to it (installed).
std::string SdGraphPath(const char* argv0) {
  if (std::filesystem::exists(SD_BENCH_SD_GRAPH)) return SD_BENCH_SD_GRAPH;
  return (std::filesystem::path(argv0).parent_path() / "sd-graph").string();
}

// Runs `command` (an sd-graph run given --stats STATS) and returns the peak resident memory sd-graph reports.
// (The kernel's ru_maxrss of a child would include the copy of this process it was forked from.)
absl::StatusOr<uint64_t> RunChild(const std::vector<std::string>& command, const std::string& bf16_mode,
                                  const std::string& stats) {
  std::map<std::string, std::string> env;
  if (!bf16_mode.empty()) env["SD_CPU_BF16"] = bf16_mode;
  SD_RETURN_IF_ERROR(RunProgram(command, env));
  auto text = ReadWholeFile(stats, "sd-graph --stats");
  if (!text.ok()) return text.status();
  const nlohmann::json j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("peak_rss_bytes")) return absl::InternalError(stats + ": no peak_rss_bytes");
  return j["peak_rss_bytes"].get<uint64_t>();
}

double Seconds(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// A --dtypes entry: the compute dtype and, for bf16 on a CPU, how it computes (bf16-native, bf16-f32; plain
// bf16 is what sd-graph does by default, CpuBf16Compute::kAuto).
struct DtypeChoice {
  torch::ScalarType dtype;
  const char* cli_name;   // sd-graph --dtype
  const char* bf16_mode;  // SD_CPU_BF16, or "" for the default
  bool int8 = false;      // f32 weights, the UNet's int8 layers in int8 (layers.h)
};

DtypeChoice ParseDtype(const std::string& d) {
  if (d == "f32") return {torch::kFloat32, "f32", ""};
  if (d == "bf16") return {torch::kBFloat16, "bf16", ""};
  if (d == "bf16-native") return {torch::kBFloat16, "bf16", "native"};
  if (d == "bf16-f32") return {torch::kBFloat16, "bf16", "f32"};
  if (d == "f16") return {torch::kFloat16, "f16", ""};
  if (d == "q8") return {torch::kFloat32, "q8", "", true};
  std::fprintf(stderr, "sd-bench: unknown dtype '%s'\n", d.c_str());
  std::exit(2);
}

// Whether bf16 weights of this choice compute in bf16 (else in fp32) on the CPU.
bool BF16Math(const DtypeChoice& c) {
  const std::string mode = c.bf16_mode;
  if (mode == "native") return true;
  if (mode == "f32") return false;
  return nn::ResolveCpuBf16Compute(nn::CpuBf16Compute::kAuto) == nn::CpuBf16Compute::kNative;
}

int Main(int argc, char** argv) {
  auto args = cli::Args::Parse(std::vector<std::string>(argv + 1, argv + argc),
                               {{"model", "size", "dtypes", "cases", "repeat", "threads", "device",
                                 "json", "golden", "controlnet"},
                                {"help", "profile", "reference"}});
  if (!args.ok()) {
    std::fprintf(stderr, "sd-bench: %s\n\n%s", std::string(args.status().message()).c_str(), kHelp);
    return 2;
  }
  if (args->Has("help")) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  const int size = std::stoi(args->GetOr("size", "512"));
  if (size <= 0 || size % 64 != 0) {
    std::fprintf(stderr, "sd-bench: --size must be a positive multiple of 64 (SD v1.x), got %d\n",
                 size);
    return 2;
  }
  const int repeat = std::max(1, std::stoi(args->GetOr("repeat", "1")));
  const int threads = ConfigureThreads(std::stoi(args->GetOr("threads", "0")));
  const torch::Device device(args->GetOr("device", "cpu"));
  const std::vector<std::string> dtypes = absl::StrSplit(args->GetOr("dtypes", "f32,bf16"), ',');
  std::vector<std::string> cases = absl::StrSplit(
      args->GetOr("cases",
                  "clip,unet1,unet2,control1,control2,unet1_control,vae_dec,vae_enc,txt2img"),
      ',');
  const bool run_txt2img = std::count(cases.begin(), cases.end(), "txt2img") > 0;
  const bool run_lora = std::count(cases.begin(), cases.end(), "lora") > 0;
  cases.erase(std::remove(cases.begin(), cases.end(), "txt2img"), cases.end());
  cases.erase(std::remove(cases.begin(), cases.end(), "lora"), cases.end());
  WarnIfSlowBlas("sd-bench");

  std::optional<testing::TempDir> tmp;
  std::string model = args->GetOr("model", "");
  std::string model_desc = model;
  if (model.empty()) {
    tmp.emplace();
    model = tmp->File("sdgold-v1-sd15.safetensors");
    auto t0 = std::chrono::steady_clock::now();
    if (absl::Status s = WriteTestCheckpoint(model, TestCheckpointOptions()); !s.ok()) {
      std::fprintf(stderr, "sd-bench: %s\n", s.ToString().c_str());
      return 1;
    }
    std::fprintf(stderr, "sd-bench: generated a full-size sdgold-v1 checkpoint in %.1f s\n",
                 Seconds(t0));
    model_desc = "sdgold-v1 SD v1.5 (generated, f32)";
  }
  auto ckpt = Checkpoint::Open(model);
  if (!ckpt.ok()) {
    std::fprintf(stderr, "sd-bench: %s\n", ckpt.status().ToString().c_str());
    return 1;
  }
  auto config = DetectConfig([&](const std::string& n) { return (*ckpt)->ShapeOf(n); });
  if (!config.ok()) {
    std::fprintf(stderr, "sd-bench: %s\n", config.status().ToString().c_str());
    return 1;
  }
  const int64_t lat = size / 8;
  torch::manual_seed(0);
  const torch::Tensor tokens = torch::randint(0, 49407, {2, 77}, torch::kInt64);
  const torch::Tensor context = torch::randn({2, 77, config->unet.context_dim});
  const torch::Tensor latents = torch::randn({2, config->unet.in_channels, lat, lat});
  const torch::Tensor image = torch::rand({1, 3, size, size}) * 2 - 1;
  const torch::Tensor enc_noise = torch::randn({1, config->vae.embed_dim, lat, lat});
  const torch::Tensor timestep = torch::tensor({500});
  const torch::Tensor hint = torch::rand({2, 3, size, size});
  const bool run_control = std::any_of(cases.begin(), cases.end(), [](const std::string& c) {
    return c.find("control") != std::string::npos;
  });
  std::string control_file;
  std::optional<testing::TempDir> control_dir;
  if (run_control) {
    control_dir.emplace();
    auto f = BenchControlNetFile(config->unet, args->GetOr("controlnet", ""), control_dir->path());
    if (!f.ok()) {
      std::fprintf(stderr, "sd-bench: %s\n", f.status().ToString().c_str());
      return 1;
    }
    control_file = *f;
  }

  std::string golden_dir;
  // The goldens belong to the sdgold-v1 weights: compared without --model (generated), or with
  // --model and an explicit --golden (a kept copy of those weights).
  if (!args->Has("model") || args->Has("golden")) {
    golden_dir = args->GetOr("golden", testing::GoldenDir());
    if (!std::filesystem::exists(golden_dir + "/unet.safetensors")) {
      std::fprintf(stderr, "sd-bench: no golden vectors in %s: the accuracy table is left out\n", golden_dir.c_str());
      golden_dir.clear();
    } else {
      setenv("SDGRAPH_SHARED_DIR", std::filesystem::path(golden_dir).parent_path().c_str(), 1);
    }
  }
  std::vector<BenchResult> results;
  std::vector<BenchAccuracy> accuracy;
  int64_t parameter_count = 0;  // of the three networks
  std::map<std::string, double> weight_bytes_of;  // per dtype: in memory, int8 weights at one byte
  double unet2_flops = 0;  // counted once, under the operator profiler
  std::map<std::string, double> load_seconds;
  for (const std::string& d : dtypes) {
    const DtypeChoice choice = ParseDtype(d);
    const torch::ScalarType dtype = choice.dtype;
    const bool bf16_math = BF16Math(choice);
    nn::SetCpuBf16Compute(bf16_math ? nn::CpuBf16Compute::kNative : nn::CpuBf16Compute::kF32);
    if (dtype == torch::kBFloat16 && device.is_cpu()) {
      std::fprintf(stderr, "sd-bench: %s computes %s\n", d.c_str(),
                   bf16_math ? "in bf16 (oneDNN)" : "in fp32 from bf16 weights held in memory");
    }
    auto t0 = std::chrono::steady_clock::now();
    ClipTextModel clip(config->clip);
    UNet unet(config->unet);
    Vae vae(config->vae);
    for (auto [m, prefix] : {std::pair<torch::nn::Module*, const char*>{clip.get(), kClipPrefix},
                             {unet.get(), kUNetPrefix},
                             {vae.get(), kVaePrefix}}) {
      if (absl::Status s = LoadWeights(*m, **ckpt, prefix, dtype, device); !s.ok()) {
        std::fprintf(stderr, "sd-bench: %s\n", s.ToString().c_str());
        return 1;
      }
    }
    // Touch every weight once, so memory-mapped pages are resident and the timings below are
    // compute only (the page-in cost is part of the load time reported here).
    for (torch::nn::Module* m :
         {static_cast<torch::nn::Module*>(clip.get()), static_cast<torch::nn::Module*>(unet.get()),
          static_cast<torch::nn::Module*>(vae.get())}) {
      for (const auto& p : m->parameters()) (void)p.sum().item<double>();
    }
    if (choice.int8) {
      const int layers = nn::UseInt8Layers(*unet);
      std::fprintf(stderr,
                   "sd-bench: %s: %d UNet layers in int8 (%s, %d-bit weights in the kernel; "
                   "feed-forward projections %s)\n",
                   d.c_str(), layers, nn::Int8ConvIsa().c_str(), nn::Int8KernelWeightBits(),
                   nn::Int8LinearAvailable() ? "int8 (VNNI)" : "f32 (no VNNI)");
    }
    load_seconds[d] = Seconds(t0);
    parameter_count = 0;
    for (torch::nn::Module* m :
         {static_cast<torch::nn::Module*>(clip.get()), static_cast<torch::nn::Module*>(unet.get()),
          static_cast<torch::nn::Module*>(vae.get())}) {
      for (const auto& p : m->parameters()) {
        parameter_count += p.numel();
        weight_bytes_of[d] += static_cast<double>(p.numel()) *
                              (p.scalar_type() == torch::kInt8 ? 1 : torch::elementSize(dtype));
      }
    }
    std::fprintf(stderr, "sd-bench: %s: models loaded in %.1f s\n", d.c_str(), load_seconds[d]);
    ControlNet control{nullptr};
    std::vector<torch::Tensor> residuals;  // batch 1, for unet1_control
    if (run_control) {
      auto net = LoadBenchControlNet(control_file, dtype, device);
      if (!net.ok()) {
        std::fprintf(stderr, "sd-bench: %s\n", net.status().ToString().c_str());
        return 1;
      }
      control = *net;
      auto r = control->Predict(latents.slice(0, 0, 1), hint.slice(0, 0, 1), timestep,
                                context.slice(0, 0, 1));
      if (!r.ok()) {
        std::fprintf(stderr, "sd-bench: %s\n", r.status().ToString().c_str());
        return 1;
      }
      residuals = *r;
    }
    auto control_run = [&](int64_t b) -> absl::StatusOr<torch::Tensor> {
      auto r = control->Predict(latents.slice(0, 0, b), hint.slice(0, 0, b), timestep,
                                context.slice(0, 0, b));
      if (!r.ok()) return r.status();
      return r->back();
    };
    std::map<std::string, std::function<absl::StatusOr<torch::Tensor>()>> run = {
        {"control1", [&] { return control_run(1); }},
        {"control2", [&] { return control_run(2); }},
        {"unet1_control",
         [&] {
           return unet->Predict(latents.slice(0, 0, 1), timestep, context.slice(0, 0, 1),
                                residuals);
         }},
        {"clip", [&] { return clip->Encode(tokens); }},
        {"unet1",
         [&] { return unet->Predict(latents.slice(0, 0, 1), timestep, context.slice(0, 0, 1)); }},
        {"unet2", [&] { return unet->Predict(latents, timestep, context); }},
        {"vae_dec",
         [&] { return vae->Decode(latents.slice(0, 0, 1).slice(1, 0, config->vae.embed_dim)); }},
        {"vae_enc", [&] { return vae->Encode(image, enc_noise); }},
    };
    // The decoder with its convolutions forced one way, for this case only.
    for (const auto& [name, layout, winograd] :
         {std::tuple{"vae_dec_nchw", nn::ConvLayout::kNchw, nn::WinogradMode::kOff},
          {"vae_dec_nhwc", nn::ConvLayout::kNhwc, nn::WinogradMode::kOff},
          {"vae_dec_winograd", nn::ConvLayout::kNchw, nn::WinogradMode::kOn}}) {
      run[name] = [&, layout = layout, winograd = winograd] {
        nn::SetVaeConvLayout(layout);
        nn::SetWinogradMode(winograd);
        auto image = run.at("vae_dec")();
        nn::SetVaeConvLayout(nn::ConvLayout::kAuto);
        nn::SetWinogradMode(nn::WinogradMode::kAuto);
        return image;
      };
    }
    for (const std::string& c : cases) {
      auto it = run.find(c);
      if (it == run.end()) {
        std::fprintf(stderr, "sd-bench: unknown case '%s'\n", c.c_str());
        return 2;
      }
      ResetPeakRss();
      std::vector<double> times;
      auto first = std::chrono::steady_clock::now();
      auto out = it->second();
      if (!out.ok()) {
        std::fprintf(stderr, "sd-bench: %s %s: %s\n", d.c_str(), c.c_str(),
                     out.status().ToString().c_str());
        return 1;
      }
      if (device.is_cuda()) torch::cuda::synchronize();
      const double first_s = Seconds(first);
      if (first_s >= 2.0) times.push_back(first_s);  // long cases: no separate warm-up run
      while (static_cast<int>(times.size()) < repeat) {
        auto t = std::chrono::steady_clock::now();
        (void)it->second();
        if (device.is_cuda()) torch::cuda::synchronize();
        times.push_back(Seconds(t));
      }
      std::sort(times.begin(), times.end());
      results.push_back({d, c, times[times.size() / 2], PeakRss()});
      std::fprintf(stderr, "sd-bench: %s %-13s %8.3f s\n", d.c_str(), c.c_str(),
                   results.back().seconds);
    }
    if (!golden_dir.empty()) {
      // The reference's own inputs through this dtype's networks, against its fp32 outputs.
      auto report = [&](const std::string& what, const absl::StatusOr<torch::Tensor>& got, const torch::Tensor& want) {
        if (!got.ok()) {
          std::fprintf(stderr, "sd-bench: %s %s: %s\n", d.c_str(), what.c_str(), got.status().ToString().c_str());
          std::exit(1);
        }
        const testing::ErrorStats e = testing::Compare(got->to(torch::kCPU), want);
        accuracy.push_back({d, what, e.max_abs, e.rel});
      };
      auto clip_g = testing::ReadGolden("clip.safetensors");
      report("clip context", clip->Encode(clip_g["tokens"].to(device)), clip_g["context"]);
      auto unet_g = testing::ReadGolden("unet.safetensors");
      const torch::Tensor ts = unet_g["timesteps"];
      std::vector<std::pair<std::string, int64_t>> unet_cases;
      for (int64_t i = 0; i < ts.size(0); ++i) {
        unet_cases.emplace_back("t" + std::to_string(ts[i].item<int64_t>()), ts[i].item<int64_t>());
      }
      unet_cases.emplace_back("rect", unet_g["rect.timestep"].item<int64_t>());
      for (const auto& [p, t] : unet_cases) {
        report("unet eps " + p,
               unet->Predict(unet_g[p + ".latent"].to(device), torch::tensor({t}), unet_g[p + ".context"].to(device)),
               unet_g[p + ".eps"]);
      }
      auto vae_g = testing::ReadGolden("vae.safetensors");
      report("vae decoder image", vae->Decode(vae_g["decoder.latent"].to(device)), vae_g["decoder.image"]);
    }
    const bool count_flops = unet2_flops == 0 && std::count(cases.begin(), cases.end(), "unet2") > 0;
    for (const char* c : {"unet2", "vae_dec"}) {
      const bool is_unet = std::string(c) == "unet2";
      if (!args->Has("profile") && !(is_unet && count_flops)) continue;
      const uint64_t fused_before = kernels::FusedAttentionFlops();
      const uint64_t products_before = nn::OneDnnBatchedMatmulFlops();
      const uint64_t plain_conv_before = nn::OneDnnConvFlops();
      const int64_t saved_before = nn::WinogradFlopsSaved();
      OpProfiler profiler;
      auto t = std::chrono::steady_clock::now();
      (void)run.at(c)();
      if (device.is_cuda()) torch::cuda::synchronize();
      const double total = Seconds(t);
      // Our fused attention kernel, the Winograd products by oneDNN and the plain-weight
      // convolutions are not ATen operators: they count their own FLOPs.
      // The UNet's count is its direct-convolution FLOPs (what its goals are stated in): the FLOPs
      // its Winograd layers saved are added back. The decoder's counts those layers' products.
      const double flops =
          profiler.Flops() + static_cast<double>(kernels::FusedAttentionFlops() - fused_before) +
          static_cast<double>(nn::OneDnnBatchedMatmulFlops() - products_before) +
          static_cast<double>(nn::OneDnnConvFlops() - plain_conv_before) +
          (is_unet ? static_cast<double>(nn::WinogradFlopsSaved() - saved_before) : 0.0);
      if (is_unet) unet2_flops = flops;
      if (!args->Has("profile")) continue;
      std::printf(
          "profile: %s %s %dx%d, %.2f s (under the profiler), %.3f TFLOP in matmuls and "
          "convolutions%s;\n",
          d.c_str(), is_unet ? "UNet batch 2" : "VAE decoder", size, size, total, flops / 1e12,
          is_unet ? "" : " (Winograd layers: their transformed products)");
      PrintTopOperators(
          profiler.Results(), total,
          "outside ATen ops (sd kernels: attention; Winograd transforms, oneDNN products; "
          "plain-weight convolutions)");
    }
  }

  std::vector<Txt2ImgMemory> txt2img;
  if (run_txt2img) {
    // sd-graph in a child process, so its peak is its own; on an fp16 copy, as most downloads are.
    std::string fp16_model = model;
    testing::TempDir out_dir;
    if (!tmp) {
      std::fprintf(stderr, "sd-bench: txt2img runs on the --model file as it is (fp16 or not)\n");
    } else {
      fp16_model = out_dir.File("sdgold-v1-sd15-fp16.safetensors");
      TestCheckpointOptions o;
      o.dtype = DType::kF16;
      if (absl::Status st = WriteTestCheckpoint(fp16_model, o); !st.ok()) {
        std::fprintf(stderr, "sd-bench: %s\n", st.ToString().c_str());
        return 1;
      }
    }
    for (const std::string& d : dtypes) {
      const DtypeChoice choice = ParseDtype(d);
      const std::vector<std::string> command = {SdGraphPath(argv[0]), "txt2img", "--model", fp16_model, "--dtype",
                                                choice.cli_name,
                                                "--steps", "2", "--width", std::to_string(size), "--height",
                                                std::to_string(size), "--prompt", "a lighthouse at dusk",
                                                "--threads", std::to_string(threads), "-o",
                                                out_dir.File("txt2img-" + d + ".png"), "--stats",
                                                out_dir.File("stats-" + d + ".json")};
      auto t0 = std::chrono::steady_clock::now();
      auto peak_rss = RunChild(command, choice.bf16_mode, out_dir.File("stats-" + d + ".json"));
      if (!peak_rss.ok()) {
        std::fprintf(stderr, "sd-bench: txt2img %s: %s\n", d.c_str(), peak_rss.status().ToString().c_str());
        return 1;
      }
      const double weight_bytes = weight_bytes_of[d];
      txt2img.push_back({d, Seconds(t0), *peak_rss, weight_bytes});
      std::fprintf(stderr, "sd-bench: %s txt2img peak RSS %.2f GB (%.2fx the weights)\n", d.c_str(), *peak_rss / 1e9,
                   *peak_rss / weight_bytes);
    }
  }
  std::vector<std::pair<std::string, LoraApplyTiming>> lora_timings;
  if (run_lora) {
    testing::TempDir lora_dir;
    for (const std::string& d : dtypes) {
      auto t = TimeLoraApply(model, 64, ParseDtype(d).dtype, lora_dir.path());
      if (!t.ok()) {
        std::fprintf(stderr, "sd-bench: lora %s: %s\n", d.c_str(), t.status().ToString().c_str());
        return 1;
      }
      lora_timings.emplace_back(d, *t);
    }
  }
  std::optional<ReferenceRun> reference;
  if (args->Has("reference")) {
    testing::TempDir ref_dir;
    ReferenceOptions o;
    o.python = SD_TEST_PYTHON;
    o.script = SD_BENCH_REFERENCE_SCRIPT;
    o.model = model;
    o.golden_dir = golden_dir;
    o.size = size;
    o.threads = threads;
    o.repeat = repeat;
    o.json_path = ref_dir.File("reference.json");
    std::fprintf(stderr,
                 "sd-bench: running the reference beside (%s; minutes at 512x512, its output "
                 "follows when it ends)\n",
                 o.script.c_str());
    auto run = RunReference(o);
    if (!run.ok()) {
      std::fprintf(stderr, "sd-bench: %s\n", run.status().ToString().c_str());
      return 1;
    }
    reference = *run;
  }
  BenchReport report;
  report.reference = std::move(reference);
  report.model = model_desc;
  report.size = size;
  report.threads = threads;
  report.device = device.str();
  report.cpu = device.is_cpu();
  report.dtypes = dtypes;
  report.cases = cases;
  for (const std::string& d : dtypes) {
    const DtypeChoice c = ParseDtype(d);
    report.bf16_math[d] = c.dtype == torch::kBFloat16 && BF16Math(c);
  }
  report.load_seconds = load_seconds;
  report.results = std::move(results);
  report.accuracy = std::move(accuracy);
  report.txt2img = std::move(txt2img);
  report.lora = std::move(lora_timings);
  report.unet2_flops = unet2_flops;
  if (device.is_cpu()) report.peak = kernels::MeasurePeakRates(threads);
  PrintBenchReport(report);
  if (auto path = args->Get("json")) WriteBenchJson(report, *path);
  return 0;
}

}  // namespace
}  // namespace sd

int main(int argc, char** argv) {
  sd::EnsureFastBlasKernels(argv);  // may re-execute this program with faster OpenBLAS kernels
  sd::InstallCpuBlockCache();       // before any tensor: freed activations stay mapped for reuse
  return sd::Main(argc, argv);
}

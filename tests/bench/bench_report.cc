#include "tests/bench/bench_report.h"

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>

#include "absl/strings/str_format.h"
#include "nodes/base/cpu_block_cache.h"
#include "nodes/base/runtime_info.h"
#include "nodes/kernels/attention_cpu.h"
#include "nodes/models/conv_layout.h"
#include "nodes/models/cpu_choice.h"
#include "nodes/models/layers.h"
#include "nodes/models/linear_cpu.h"
#include "nodes/models/plain_conv.h"
#include "nodes/models/upsample_conv.h"
#include "nodes/models/winograd_conv.h"

namespace sd {

namespace {

void PrintLora(const BenchReport& r) {
  if (r.lora.empty()) return;
  std::printf(
      "LoRA rank 64 on the UNet (%zu layers, %.0f MB fp16 file): building the UNet plain, then "
      "patched\n",
      r.lora.front().second.layers, r.lora.front().second.lora_file_bytes / 1e6);
  std::printf("  %-6s %10s %10s %12s %12s %12s\n", "dtype", "plain s", "patched s", "RSS plain",
              "RSS both", "peak RSS");
  for (const auto& [d, t] : r.lora) {
    std::printf("  %-6s %10.2f %10.2f %9.2f GB %9.2f GB %9.2f GB\n", d.c_str(), t.base_seconds,
                t.lora_seconds, t.rss_base / 1e9, t.rss_patched / 1e9, t.peak_rss / 1e9);
  }
}

// GFLOP/s of the batch-2 UNet runs against the CPU's measured peak.
void PrintUNetRates(const BenchReport& r) {
  if (r.peak.fp32_gflops > 0) {
    std::printf("CPU peak, measured on %d threads: fp32 FMA %.0f GFLOP/s, bf16 dot product %s\n",
                r.threads, r.peak.fp32_gflops,
                r.peak.bf16_gflops > 0 ? absl::StrFormat("%.0f GFLOP/s", r.peak.bf16_gflops).c_str()
                                       : "not available");
  }
  if (r.unet2_flops <= 0) return;
  for (const BenchResult& res : r.results) {
    if (res.case_name != "unet2") continue;
    const double rate = r.unet2_flops / res.seconds / 1e9;
    const bool bf16_math = r.bf16_math.count(res.dtype) && r.bf16_math.at(res.dtype);
    const double ceiling = bf16_math            ? r.peak.bf16_gflops
                           : res.dtype != "f16" ? r.peak.fp32_gflops
                                                : 0;
    std::printf("UNet batch 2 (one CFG step): %.3f TFLOP; %s %.2f s = %.0f GFLOP/s",
                r.unet2_flops / 1e12, res.dtype.c_str(), res.seconds, rate);
    if (ceiling > 0) {
      std::printf(" (%.0f%% of the %s peak; floor %.2f s)", 100 * rate / ceiling,
                  bf16_math ? "bf16" : "fp32", r.unet2_flops / ceiling / 1e9);
    }
    std::printf("\n");
  }
}

// What `sd-graph --cfg-batch on` gains in process, per dtype: the seconds of one batch-2 call and
// of two batch-1 calls.
std::map<std::string, std::pair<double, double>> CfgBatchTimes(const BenchReport& r) {
  std::map<std::string, std::pair<double, double>> times;
  for (const BenchResult& two : r.results) {
    for (const BenchResult& one : r.results) {
      if (two.case_name != "unet2" || one.case_name != "unet1" || one.dtype != two.dtype) continue;
      times[two.dtype] = {two.seconds, 2 * one.seconds};
    }
  }
  return times;
}

void PrintAccuracy(const BenchReport& r) {
  if (r.accuracy.empty()) return;
  std::printf(
      "error against the fp32 reference goldens (sdgold-v1 weights; the fp32 bound is 1e-4 "
      "max-abs)\n");
  std::printf("  %-22s", "stage");
  for (const auto& d : r.dtypes) {
    std::printf(" %12s %12s", (d + " max-abs").c_str(), (d + " rel").c_str());
  }
  std::printf("\n");
  const std::vector<BenchAccuracy>& a = r.accuracy;
  for (size_t i = 0; i < a.size() && a[i].dtype == a[0].dtype; ++i) {
    std::printf("  %-22s", a[i].what.c_str());
    for (const auto& d : r.dtypes) {
      for (const BenchAccuracy& e : a) {
        if (e.dtype == d && e.what == a[i].what) std::printf(" %12.3e %12.3e", e.max_abs, e.rel);
      }
    }
    std::printf("\n");
  }
}

void PrintTxt2Img(const BenchReport& r) {
  if (r.txt2img.empty()) return;
  std::printf(
      "sd-graph txt2img, %dx%d, 2 steps, fp16 checkpoint: peak resident memory against the "
      "weights\n",
      r.size, r.size);
  std::printf("  %-6s %10s %14s %14s %8s\n", "dtype", "seconds", "peak RSS", "weights", "ratio");
  for (const Txt2ImgMemory& m : r.txt2img) {
    std::printf("  %-6s %10.1f %11.2f GB %11.2f GB %7.2fx\n", m.dtype.c_str(), m.seconds,
                m.peak_rss / 1e9, m.weight_bytes / 1e9, m.peak_rss / m.weight_bytes);
  }
}

// The CPU and the code paths its measurements chose.
void PrintCpuChoices(const BenchReport& r) {
  std::printf(
      "CPU: %s [%s]; fused attention: %s; bf16 weights compute %s (native bf16 measured at %.2fx "
      "fp32 math); VAE decoder convolutions %s (channels-last measured at %.2fx NCHW)\n",
      kernels::CpuModelName().c_str(), kernels::CpuVectorFeatures().c_str(),
      kernels::AttentionKernelName(),
      nn::ResolvedCpuBf16Compute() == nn::CpuBf16Compute::kNative ? "natively" : "in fp32",
      nn::MeasuredNativeBf16Speedup(), nn::ConvLayoutName(nn::ResolvedVaeConvLayout()),
      nn::MeasuredChannelsLastSpeedup());
  std::printf(
      "Winograd F(4x4,3x3) for large 3x3 convolutions (%s; products by %s), speed against "
      "direct per pair of channel counts this run asked about:",
      nn::WinogradModeInForce() == nn::WinogradMode::kAuto ? "auto" : "forced",
      nn::WinogradProductsByOneDnn() ? "oneDNN" : "the BLAS");
  for (const nn::WinogradProbe& p : nn::WinogradProbes()) {
    const int64_t side = nn::WinogradProbeSide(p.in, p.out);
    std::printf(" %ld->%ld (at %ldx%ld) %.2fx%s", p.in, p.out, side, side, p.speedup,
                nn::UsesWinograd(p.in, p.out, r.size, r.size) ? "" : " (direct)");
  }
  std::printf(
      "\nSmall-image convolutions on plain weights by oneDNN (%s; plain_conv.h), speed against "
      "LibTorch's per layer this run asked about:",
      nn::PlainConvModeInForce() == nn::PlainConvMode::kAuto ? "auto"
      : nn::PlainConvModeInForce() == nn::PlainConvMode::kOn ? "on"
                                                             : "off");
  for (const nn::PlainConvProbe& p : nn::PlainConvProbes()) {
    std::printf(" %s %.2fx%s", nn::PlainConvLayerText(p.layer).c_str(), p.speedup,
                p.speedup >= nn::kPlainConvMinSpeedup ? "" : " (LibTorch's)");
  }
  std::printf("\nVAE decoder upsampling (sub-pixel against upsampled, then convolved):");
  for (const int64_t c : nn::DecoderUpsampleChannels(SdConfig::Sd15().vae)) {
    const std::optional<double> s =
        nn::RecordedOnThisMachine(nn::SubpixelMeasurement(c, nn::WinogradProductsByOneDnn()));
    if (s)
      std::printf(" %ld channels %.2fx (%s)", c, *s,
                  nn::UsesSubpixelUpsample(c) ? "sub-pixel" : "upsampled");
  }
  std::printf("\nlinear layers: %s (oneDNN measured at %.2fx the BLAS)",
              nn::CpuLinearName(nn::ResolvedCpuLinear()), nn::MeasuredOneDnnLinearSpeedup());
  const CpuBlockCacheStats cache = GetCpuBlockCacheStats();
  if (cache.installed) {
    std::printf(
        "\nCPU tensors: block cache (nodes/base/cpu_block_cache.h): %llu large allocations reused, "
        "%llu grown, %llu mapped, %llu unmapped",
        static_cast<unsigned long long>(cache.reused), static_cast<unsigned long long>(cache.grown),
        static_cast<unsigned long long>(cache.mapped),
        static_cast<unsigned long long>(cache.unmapped));
  } else {
    std::printf(
        "\nCPU tensors: LibTorch's allocator (SD_CPU_BLOCK_CACHE=0, or no huge pages on request)");
  }
  const std::string file = nn::CpuMeasurementsFile();
  std::printf("\nCPU measurements (once per machine) kept in %s\n",
              file.empty() ? "no file (SDGRAPH_CPU_MEASUREMENTS=off)" : file.c_str());
}

void PrintCases(const BenchReport& r) {
  std::printf("%-14s", "case");
  for (const auto& d : r.dtypes) {
    std::printf(" %10s %12s", (d + " s").c_str(), (d + " peak").c_str());
  }
  if (r.dtypes.size() >= 2) std::printf(" %12s", (r.dtypes[1] + "/" + r.dtypes[0]).c_str());
  std::printf("\n");
  for (const std::string& c : r.cases) {
    std::printf("%-14s", c.c_str());
    std::vector<double> secs;
    for (const auto& d : r.dtypes) {
      for (const BenchResult& res : r.results) {
        if (res.dtype == d && res.case_name == c) {
          std::printf(" %10.3f %10.2f GB", res.seconds, res.peak_rss / 1e9);
          secs.push_back(res.seconds);
        }
      }
    }
    if (secs.size() >= 2) std::printf(" %12.2f", secs[1] / secs[0]);
    std::printf("\n");
  }
}

// Each dtype's time against the reference's (fp32, same run): how many times faster we are.
void PrintReference(const BenchReport& r) {
  if (!r.reference) return;
  std::printf("Against the reference beside (PyTorch %s, fp32, %d threads): reference s",
              r.reference->torch_version.c_str(), r.threads);
  for (const auto& d : r.dtypes) std::printf(", %s s (speedup)", d.c_str());
  std::printf("\n");
  for (const auto& [c, ref] : r.reference->seconds) {
    std::printf("  %-10s %8.2f", c.c_str(), ref);
    for (const auto& d : r.dtypes) {
      for (const BenchResult& res : r.results) {
        if (res.dtype == d && res.case_name == c) {
          std::printf("   %8.2f (%.2fx)", res.seconds, ref / res.seconds);
        }
      }
    }
    std::printf("\n");
  }
  for (const auto& [stage, e] : r.reference->golden_max_abs) {
    std::printf("  reference vs goldens, %s: max-abs %.1e\n", stage.c_str(), e);
  }
}

nlohmann::json CpuJson(const BenchReport& r) {
  nlohmann::json cpu = {
      {"model", kernels::CpuModelName()},
      {"features", kernels::CpuVectorFeatures()},
      {"peak_vector", r.peak.vector},
      {"attention_kernel", kernels::AttentionKernelName()},
      {"bf16_compute",
       nn::ResolvedCpuBf16Compute() == nn::CpuBf16Compute::kNative ? "native" : "f32"},
      {"native_bf16_speedup", nn::MeasuredNativeBf16Speedup()},
      {"vae_conv_layout", nn::ConvLayoutName(nn::ResolvedVaeConvLayout())},
      {"channels_last_speedup", nn::MeasuredChannelsLastSpeedup()},
      {"linear", nn::CpuLinearName(nn::ResolvedCpuLinear())},
      {"winograd_products", nn::WinogradProductsByOneDnn() ? "onednn" : "blas"},
      {"onednn_linear_speedup", nn::MeasuredOneDnnLinearSpeedup()},
      {"measurements_file", nn::CpuMeasurementsFile()}};
  for (const int64_t c : nn::DecoderUpsampleChannels(SdConfig::Sd15().vae)) {
    if (const std::optional<double> s =
            nn::RecordedOnThisMachine(nn::SubpixelMeasurement(c, nn::WinogradProductsByOneDnn()))) {
      cpu["subpixel_upsampling"].push_back(
          {{"channels", c}, {"speedup", *s}, {"used", nn::UsesSubpixelUpsample(c)}});
    }
  }
  for (const nn::WinogradProbe& p : nn::WinogradProbes()) {
    cpu["winograd"].push_back({{"in", p.in},
                               {"out", p.out},
                               {"speedup", p.speedup},
                               {"used", nn::UsesWinograd(p.in, p.out, r.size, r.size)}});
  }
  for (const nn::PlainConvProbe& p : nn::PlainConvProbes()) {
    cpu["plain_weight_conv"].push_back({{"layer", nn::PlainConvLayerText(p.layer)},
                                        {"speedup", p.speedup},
                                        {"used", p.speedup >= nn::kPlainConvMinSpeedup}});
  }
  return cpu;
}

}  // namespace

void PrintBenchReport(const BenchReport& r) {
  PrintLora(r);
  PrintUNetRates(r);
  for (const auto& [d, t] : CfgBatchTimes(r)) {
    std::printf("CFG step as one batch-2 call: %s %.2f s, as two batch-1 calls %.2f s: %.2fx\n",
                d.c_str(), t.first, t.second, t.second / t.first);
  }
  PrintAccuracy(r);
  PrintTxt2Img(r);
  std::printf("sd-bench: %s, %dx%d, %s, %d threads, BLAS %s\n", r.model.c_str(), r.size, r.size,
              r.device.c_str(), r.threads, LoadedBlas().Describe().c_str());
  if (r.cpu) PrintCpuChoices(r);
  PrintCases(r);
  PrintReference(r);
}

void WriteBenchJson(const BenchReport& r, const std::string& path) {
  nlohmann::json j;
  j["model"] = r.model;
  j["size"] = r.size;
  j["device"] = r.device;
  j["threads"] = r.threads;
  j["blas"] = LoadedBlas().Describe();
  if (r.cpu) j["cpu"] = CpuJson(r);
  j["cpu_block_cache"] = GetCpuBlockCacheStats().installed;
  j["load_seconds"] = r.load_seconds;
  for (const auto& [d, t] : CfgBatchTimes(r)) j["cfg_batch_speedup"][d] = t.second / t.first;
  if (r.unet2_flops > 0) j["unet2_flops"] = r.unet2_flops;
  if (r.peak.fp32_gflops > 0) {
    j["peak_gflops"] = {{"fp32_fma", r.peak.fp32_gflops}, {"bf16_dot", r.peak.bf16_gflops}};
  }
  for (const Txt2ImgMemory& m : r.txt2img) {
    j["txt2img"].push_back({{"dtype", m.dtype},
                            {"seconds", m.seconds},
                            {"peak_rss_bytes", m.peak_rss},
                            {"weight_bytes", m.weight_bytes}});
  }
  for (const auto& [d, t] : r.lora) {
    j["lora"].push_back({{"dtype", d},
                         {"rank", t.rank},
                         {"layers", t.layers},
                         {"plain_seconds", t.base_seconds},
                         {"patched_seconds", t.lora_seconds},
                         {"rss_plain_bytes", t.rss_base},
                         {"rss_both_bytes", t.rss_patched},
                         {"peak_rss_bytes", t.peak_rss}});
  }
  for (const BenchAccuracy& a : r.accuracy) {
    j["accuracy"].push_back(
        {{"dtype", a.dtype}, {"stage", a.what}, {"max_abs", a.max_abs}, {"rel", a.rel}});
  }
  for (const BenchResult& res : r.results) {
    j["results"].push_back({{"dtype", res.dtype},
                            {"case", res.case_name},
                            {"seconds", res.seconds},
                            {"peak_rss_bytes", res.peak_rss}});
  }
  if (r.reference) {
    j["reference"] = {{"torch", r.reference->torch_version},
                      {"seconds", r.reference->seconds},
                      {"golden_max_abs", r.reference->golden_max_abs}};
  }
  std::ofstream(path) << j.dump(2) << "\n";
}

}  // namespace sd

// sd-graph cpu: this machine's CPU as sdgraph sees it, and the code paths its measurements chose
// (nodes/models/cpu_choice.h); --measure makes the measurements now, --forget drops them.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "host_plugin/cli/commands.h"
#include "host_plugin/cli/common.h"
#include "nodes/base/runtime_info.h"
#include "nodes/kernels/attention_cpu.h"
#include "nodes/kernels/cpu_rates.h"
#include "nodes/models/batched_matmul.h"
#include "nodes/models/conv_layout.h"
#include "nodes/models/cpu_choice.h"
#include "nodes/models/layers.h"
#include "nodes/models/linear_cpu.h"
#include "nodes/models/upsample_conv.h"
#include "nodes/models/winograd_conv.h"
#include "nodes/weights/sd_config.h"

namespace sd::cli {

namespace {

constexpr char kHelp[] =
    "usage: sd-graph cpu [--measure] [--forget] [--threads N] [--json]\n"
    "\n"
    "Prints this machine's CPU (model, vector extensions), the BLAS LibTorch calls and its "
    "kernels,\n"
    "the fused attention body, and what the CPU measurements chose: how bf16 weights compute, the "
    "VAE's\n"
    "convolution layout and, per pair of channel counts of the SD VAE's 3x3 convolutions, Winograd "
    "or\n"
    "direct; per channel count of the VAE decoder's upsampling layers, sub-pixel or upsampled then "
    "convolved;\n"
    "and whether linear layers run through oneDNN or the BLAS. Those are timed once per machine, "
    "by the first process that needs them, and kept in "
    "the\n"
    "measurement file (~/.cache/sdgraph/cpu-measurements; SDGRAPH_CPU_MEASUREMENTS=FILE|off), "
    "keyed "
    "by\n"
    "the CPU, its vector extensions, the thread count and the BLAS kernels. Without --measure "
    "nothing\n"
    "is timed: what is not on file is shown as such.\n"
    "\n"
    "  --measure    time what is not on file yet (about 15 s), e.g. when a farm machine is set up\n"
    "  --forget     first drop this machine's lines from the file (with --measure: measure again)\n"
    "  --threads N  the thread count to report and measure for (default: all cores, as the "
    "generating\n"
    "               commands use; the measurements are per thread count)\n"
    "  --json       print one JSON object\n";

// The (in, out) channel pairs of the SD v1.x VAE's 3x3 convolutions that may run by Winograd.
std::vector<std::pair<int64_t, int64_t>> VaeWinogradPairs() {
  const VaeConfig vae = SdConfig::Sd15().vae;
  std::vector<std::pair<int64_t, int64_t>> pairs;
  auto add = [&](int64_t in, int64_t out) {
    if (std::min(in, out) < nn::kWinogradMinChannels) return;
    for (const auto& p : pairs) {
      if (p == std::make_pair(in, out)) return;
    }
    pairs.emplace_back(in, out);
  };
  int64_t prev = vae.ch;
  for (int m : vae.ch_mult) {  // the encoder's levels, then the decoder's in reverse
    add(prev, vae.ch * m);
    add(vae.ch * m, vae.ch * m);
    prev = vae.ch * m;
  }
  for (auto it = vae.ch_mult.rbegin(); it != vae.ch_mult.rend(); ++it) {
    add(prev, vae.ch * *it);
    prev = vae.ch * *it;
  }
  return pairs;
}

nlohmann::json Recorded(const std::string& name) {
  const std::optional<double> v = nn::RecordedOnThisMachine(name);
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

std::string Ratio(const nlohmann::json& v) {
  return v.is_null() ? "not measured yet" : absl::StrFormat("%.2fx", v.get<double>());
}

}  // namespace

int CpuCommand(const std::vector<std::string>& argv) {
  int code = kExitOk;
  auto args =
      ParseCommandLine("cpu", argv, {{"threads"}, {"measure", "forget", "json"}}, kHelp, &code);
  if (!args) return code;
  int threads = 0;
  if (auto t = args->Get("threads"); t && (!absl::SimpleAtoi(*t, &threads) || threads < 0)) {
    std::fprintf(stderr, "sd-graph cpu: --threads must be a non-negative integer\n\n%s", kHelp);
    return kExitUsage;
  }
  threads = ConfigureThreads(threads);
  if (args->Has("forget")) {
    auto dropped = nn::ForgetThisMachine();
    if (!dropped.ok()) return Fail("cpu", dropped.status());
    std::fprintf(stderr, "sd-graph cpu: dropped %d measurement(s) of this machine\n", *dropped);
  }
  const auto pairs = VaeWinogradPairs();
  if (args->Has("measure")) {
    (void)nn::MeasuredNativeBf16Speedup();
    (void)nn::MeasuredChannelsLastSpeedup();
    (void)nn::MeasuredOneDnnLinearSpeedup();  // first: it says how Winograd's products run
    for (const auto& [in, out] : pairs) (void)nn::MeasuredWinogradSpeedup(in, out);
    for (const int64_t c : nn::DecoderUpsampleChannels(SdConfig::Sd15().vae))
      (void)nn::MeasuredSubpixelSpeedup(c);
  }
  nlohmann::json j;
  j["cpu"] = kernels::CpuModelName();
  j["features"] = kernels::CpuVectorFeatures();
  j["threads"] = threads;
  j["blas"] = LoadedBlas().Describe();
  j["attention_kernel"] = kernels::AttentionKernelName();
  j["measurements_file"] = nn::CpuMeasurementsFile();
  j["machine"] = nn::MeasuredMachine();
  j["native_bf16_speedup"] = Recorded(nn::kNativeBf16Measurement);
  j["channels_last_speedup"] = Recorded(nn::kChannelsLastMeasurement);
  // Winograd's products run as linear layers do (winograd_conv.h), so its speedups, and the
  // sub-pixel upsampling's (whose other path may run by Winograd), are those measured that way;
  // until linear layers are decided, neither is.
  const nlohmann::json linear = Recorded(nn::kOneDnnLinearMeasurement);
  const bool onednn_products = nn::HaveOneDnnBatchedMatmul() && !linear.is_null() &&
                               linear.get<double>() >= nn::kOneDnnLinearMinSpeedup;
  j["winograd_products"] = linear.is_null()  ? "decided on first use"
                           : onednn_products ? "onednn"
                                             : "blas";
  for (const auto& [in, out] : pairs) {
    const nlohmann::json s = linear.is_null()
                                 ? nlohmann::json(nullptr)
                                 : Recorded(nn::WinogradMeasurement(in, out, onednn_products));
    j["winograd"].push_back({{"in", in},
                             {"out", out},
                             {"speedup", s},
                             {"used", !s.is_null() && s.get<double>() >= nn::kWinogradMinSpeedup}});
  }
  for (const int64_t c : nn::DecoderUpsampleChannels(SdConfig::Sd15().vae)) {
    const nlohmann::json s = linear.is_null()
                                 ? nlohmann::json(nullptr)
                                 : Recorded(nn::SubpixelMeasurement(c, onednn_products));
    j["subpixel_upsampling"].push_back(
        {{"channels", c},
         {"speedup", s},
         {"used", !s.is_null() && s.get<double>() >= nn::kSubpixelMinSpeedup}});
  }
  j["onednn_linear_speedup"] = linear;
  if (args->Has("json")) {
    std::printf("%s\n", j.dump(2).c_str());
    return kExitOk;
  }
  const std::string file = j["measurements_file"];
  std::printf("CPU: %s [%s], %d threads\nBLAS: %s\nfused attention: %s\n",
              j["cpu"].get<std::string>().c_str(), j["features"].get<std::string>().c_str(),
              threads, j["blas"].get<std::string>().c_str(),
              j["attention_kernel"].get<std::string>().c_str());
  std::printf("measurements: %s\n  this machine: %s\n",
              file.empty() ? "none kept (SDGRAPH_CPU_MEASUREMENTS=off)" : file.c_str(),
              j["machine"].get<std::string>().c_str());
  const nlohmann::json& bf16 = j["native_bf16_speedup"];
  std::printf("bf16 weights compute: %s (native bf16 against fp32 math: %s)\n",
              bf16.is_null()                                    ? "decided on first use"
              : bf16.get<double>() >= nn::kNativeBf16MinSpeedup ? "natively"
                                                                : "in fp32",
              Ratio(bf16).c_str());
  const nlohmann::json& layout = j["channels_last_speedup"];
  std::printf("VAE convolutions: %s (channels-last against NCHW: %s)\n",
              layout.is_null()             ? "decided on first use"
              : layout.get<double>() > 1.0 ? "channels-last"
                                           : "NCHW",
              Ratio(layout).c_str());
  std::printf(
      "Winograd F(4x4,3x3) against direct, per pair of channel counts (taken at %.1fx or more; "
      "its products: %s):\n",
      nn::kWinogradMinSpeedup, j["winograd_products"].get<std::string>().c_str());
  for (const auto& w : j["winograd"]) {
    std::printf("  %4ld -> %-4ld %s%s\n", w["in"].get<long>(), w["out"].get<long>(),
                Ratio(w["speedup"]).c_str(),
                w["speedup"].is_null()  ? ""
                : w["used"].get<bool>() ? "  Winograd"
                                        : "  direct");
  }
  std::printf(
      "VAE decoder upsampling, sub-pixel against upsampled then convolved (taken at %.1fx or "
      "more):\n",
      nn::kSubpixelMinSpeedup);
  for (const auto& u : j["subpixel_upsampling"]) {
    std::printf("  %4ld channels %s%s\n", u["channels"].get<long>(), Ratio(u["speedup"]).c_str(),
                u["speedup"].is_null()  ? ""
                : u["used"].get<bool>() ? "  sub-pixel"
                                        : "  upsampled");
  }
  std::printf("linear layers: %s (oneDNN against the BLAS: %s)\n",
              linear.is_null()                                      ? "decided on first use"
              : linear.get<double>() >= nn::kOneDnnLinearMinSpeedup ? "oneDNN"
                                                                    : "BLAS",
              Ratio(linear).c_str());
  return kExitOk;
}

}  // namespace sd::cli

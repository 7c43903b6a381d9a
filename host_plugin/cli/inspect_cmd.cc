#include <cstdio>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "host_plugin/cli/commands.h"
#include "host_plugin/cli/common.h"
#include "nodes/weights/checkpoint.h"
#include "nodes/weights/controlnet_layout.h"
#include "nodes/weights/demo_model.h"
#include "nodes/weights/sd_config.h"

namespace sd::cli {

namespace {
constexpr char kHelp[] =
    "usage: sd-graph inspect MODEL [--json]\n"
    "\n"
    "Reads a .safetensors or .ckpt checkpoint (recognised by content, not by extension; a .ckpt is "
    "read\n"
    "with a restricted unpickler that never runs code from the file) and prints its format, "
    "dtype,\n"
    "tensor and parameter counts, the Stable Diffusion configuration detected from the tensor "
    "shapes,\n"
    "the check of every expected key (missing keys and shape mismatches are listed), and the "
    "sha256\n"
    "content hash that identifies the model. A ControlNet (any layout) is reported as one: its "
    "layout,\n"
    "hint channels and the UNet it copies. Exits 1 when the file is not a usable SD v1.x "
    "checkpoint or\n"
    "ControlNet.\n"
    "\n"
    "  --json   print one JSON object instead of text\n";
}  // namespace

namespace {

// What every file reports first: file, format, dtype, tensor and parameter counts, sha256.
nlohmann::json FileJson(const Checkpoint& c) {
  nlohmann::json j;
  j["file"] = c.path();
  j["format"] = FormatName(c.format());
  j["dtype"] = std::string(DTypeName(c.PredominantFloatDType()));
  j["tensors"] = c.tensors().size();
  j["parameters"] = c.ParameterCount();
  j["sha256"] = c.ContentHash();
  return j;
}

void PrintFile(const Checkpoint& c) {
  std::printf("file:        %s\n", c.path().c_str());
  std::printf("format:      %s\n", FormatName(c.format()));
  std::printf("dtype:       %s\n", std::string(DTypeName(c.PredominantFloatDType())).c_str());
  std::printf("tensors:     %zu (%llu parameters)\n", c.tensors().size(),
              static_cast<unsigned long long>(c.ParameterCount()));
  std::printf("sha256:      %s\n", c.ContentHash().c_str());
}

// A ControlNet file: its layout and configuration, or why it cannot be used. kExitOk when it loads.
int InspectControlNet(const Checkpoint& c, const absl::StatusOr<ControlNetFile>& f, bool json) {
  if (json) {
    nlohmann::json j = FileJson(c);
    j["kind"] = "controlnet";
    if (f.ok()) {
      j["layout"] = LayoutName(f->layout);
      j["config"] = {{"hint_channels", f->config.hint_channels},
                     {"model_channels", f->config.unet.model_channels},
                     {"channel_mult", f->config.unet.channel_mult},
                     {"num_res_blocks", f->config.unet.num_res_blocks},
                     {"attention", f->config.unet.attention},
                     {"context_dim", f->config.unet.context_dim}};
    } else {
      j["config_error"] = std::string(f.status().message());
    }
    j["ok"] = f.ok();
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    PrintFile(c);
    if (f.ok()) {
      std::printf(
          "config:      ControlNet for Stable Diffusion v1.x, %s layout, %d hint channels\n"
          "unet copy:   model_channels=%d channel_mult=[%s] num_res_blocks=%d context_dim=%d\n",
          LayoutName(f->layout), f->config.hint_channels, f->config.unet.model_channels,
          absl::StrJoin(f->config.unet.channel_mult, ",").c_str(), f->config.unet.num_res_blocks,
          f->config.unet.context_dim);
    } else {
      std::printf("config:      a ControlNet that cannot be used: %s\n",
                  std::string(f.status().message()).c_str());
    }
  }
  return f.ok() ? kExitOk : Fail("inspect", f.status());
}

}  // namespace

int InspectCommand(const std::vector<std::string>& argv) {
  int code = kExitOk;
  auto args = ParseCommandLine("inspect", argv, {{}, {"json"}}, kHelp, &code);
  if (!args) return code;
  if (args->positionals().size() != 1) {
    std::fprintf(stderr, "sd-graph inspect: expected exactly one MODEL\n\n%s", kHelp);
    return kExitUsage;
  }
  auto ckpt = Checkpoint::Open(args->positionals()[0]);
  if (!ckpt.ok()) return Fail("inspect", ckpt.status());
  const Checkpoint& c = **ckpt;
  ShapeLookup lookup = [&c](const std::string& n) { return c.ShapeOf(n); };
  absl::StatusOr<SdConfig> config = DetectConfig(lookup);
  if (!config.ok() && LooksLikeControlNet(c)) {
    return InspectControlNet(c, ReadControlNetLayout(c), args->Has("json"));
  }
  KeyCheck check;
  size_t expected = 0;
  if (config.ok()) {
    check = CheckKeys(*config, lookup);
    expected = ExpectedKeys(*config).size();
  }
  const size_t extra = c.tensors().size() - check.matched - check.mismatched.size();

  if (args->Has("json")) {
    nlohmann::json j = FileJson(c);
    if (const auto native = NativeSize(c.metadata())) j["native_size"] = *native;
    if (!c.metadata().empty()) j["metadata"] = c.metadata();
    if (config.ok()) {
      j["config_name"] = ConfigName(*config);
      const SdConfig& s = *config;
      j["config"] = {
          {"unet", {{"in_channels", s.unet.in_channels}, {"out_channels", s.unet.out_channels},
                    {"model_channels", s.unet.model_channels}, {"channel_mult", s.unet.channel_mult},
                    {"num_res_blocks", s.unet.num_res_blocks}, {"attention", s.unet.attention},
                    {"num_heads", s.unet.num_heads}, {"transformer_depth", s.unet.transformer_depth},
                    {"context_dim", s.unet.context_dim}, {"inpainting", s.unet.in_channels == 9}}},
          {"vae", {{"ch", s.vae.ch}, {"ch_mult", s.vae.ch_mult}, {"num_res_blocks", s.vae.num_res_blocks},
                   {"z_channels", s.vae.z_channels}, {"embed_dim", s.vae.embed_dim}}},
          {"clip", {{"vocab_size", s.clip.vocab_size}, {"max_positions", s.clip.max_positions},
                    {"width", s.clip.width}, {"layers", s.clip.layers}, {"heads", s.clip.heads},
                    {"ffn", s.clip.ffn}}}};
      nlohmann::json mism = nlohmann::json::array();
      for (const ShapeMismatch& m : check.mismatched) {
        mism.push_back({{"name", m.name}, {"expected", m.expected}, {"found", m.found}});
      }
      j["keys"] = {{"expected", expected}, {"matched", check.matched}, {"missing", check.missing},
                   {"mismatched", mism}, {"extra", extra}};
    } else {
      j["config_error"] = std::string(config.status().message());
    }
    j["ok"] = config.ok() && check.ok();
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    PrintFile(c);
    if (config.ok()) {
      std::printf("config:      Stable Diffusion v1.x%s (%s)\n%s\n",
                  config->unet.in_channels == 9 ? " inpainting" : "", ConfigName(*config).c_str(),
                  config->Describe().c_str());
      if (const auto native = NativeSize(c.metadata()))
        std::printf("native size: %dx%d\n", *native, *native);
      if (auto it = c.metadata().find("sdgraph.description"); it != c.metadata().end()) {
        std::printf("about:       %s\n", it->second.c_str());
      }
      std::printf("keys:        %zu expected, %zu matched, %zu missing, %zu shape mismatches, %zu extra\n",
                  expected, check.matched, check.missing.size(), check.mismatched.size(), extra);
    } else {
      std::printf("config:      not detected: %s\n", std::string(config.status().message()).c_str());
    }
    if (!c.ignored_entries().empty()) {
      std::printf("non-tensor:  %zu state-dict entries ignored\n", c.ignored_entries().size());
    }
  }
  if (!config.ok()) return Fail("inspect", config.status());
  if (!check.ok()) return Fail("inspect", check.ToStatus(c.path()));
  return kExitOk;
}

}  // namespace sd::cli

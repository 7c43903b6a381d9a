#include "nodes/weights/controlnet_layout.h"

#include <filesystem>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "nodes/weights/lora_keys.h"
#include "nodes/weights/tensor_view.h"

namespace sd {
namespace {

void Add(std::vector<KeySpec>& keys, const std::string& conv, int64_t out, int64_t in, int64_t k) {
  keys.push_back({conv + ".weight", {out, in, k, k}});
  keys.push_back({conv + ".bias", {out}});
}

// diffusers' ResnetBlock2D part -> LDM's ResBlock part.
std::string LdmResnetPart(const std::string& part) {
  static const std::map<std::string, std::string> parts = {
      {"norm1", "in_layers.0"},  {"conv1", "in_layers.2"},  {"time_emb_proj", "emb_layers.1"},
      {"norm2", "out_layers.0"}, {"conv2", "out_layers.3"}, {"conv_shortcut", "skip_connection"}};
  auto it = parts.find(part);
  return it == parts.end() ? "" : it->second;
}

bool Index(const std::string& s, int* i) { return absl::SimpleAtoi(s, i) && *i >= 0 && *i < 1000; }

// "name.weight" / "name.bias" -> {"name", "weight"}.
bool SplitParam(const std::string& key, std::string* module, std::string* param) {
  const size_t dot = key.rfind('.');
  if (dot == std::string::npos) return false;
  *module = key.substr(0, dot);
  *param = key.substr(dot + 1);
  return true;
}

// The unprefixed name of a diffusers module path; "" when unknown.
std::string DiffusersModule(const std::string& m, int nr) {
  static const std::map<std::string, std::string> fixed = {
      {"conv_in", "input_blocks.0.0"},
      {"time_embedding.linear_1", "time_embed.0"},
      {"time_embedding.linear_2", "time_embed.2"},
      {"controlnet_cond_embedding.conv_in", "input_hint_block.0"},
      {"controlnet_cond_embedding.conv_out", "input_hint_block.14"},
      {"controlnet_mid_block", "middle_block_out.0"}};
  if (auto it = fixed.find(m); it != fixed.end()) return it->second;
  const std::vector<std::string> p = absl::StrSplit(m, absl::MaxSplits('.', 4));
  int a = 0, b = 0;
  if (p.size() == 3 && p[0] == "controlnet_cond_embedding" && p[1] == "blocks" && Index(p[2], &a) &&
      a < 6)
    return absl::StrCat("input_hint_block.", 2 * (a + 1));
  if (p.size() == 2 && p[0] == "controlnet_down_blocks" && Index(p[1], &a))
    return absl::StrCat("zero_convs.", a, ".0");
  if (p.size() >= 4 && p[0] == "mid_block" && Index(p[2], &a)) {
    const std::string rest = absl::StrJoin(std::vector<std::string>(p.begin() + 3, p.end()), ".");
    if (p[1] == "attentions" && a == 0) return "middle_block.1." + rest;
    const std::string r = LdmResnetPart(rest);
    if (p[1] == "resnets" && a < 2 && !r.empty())
      return absl::StrCat("middle_block.", 2 * a, ".", r);
    return "";
  }
  if (p.size() >= 5 && p[0] == "down_blocks" && Index(p[1], &a) && Index(p[3], &b)) {
    const int block = 1 + a * (nr + 1);
    const std::string& rest = p[4];
    if (p[2] == "resnets" && b < nr && !LdmResnetPart(rest).empty())
      return absl::StrCat("input_blocks.", block + b, ".0.", LdmResnetPart(rest));
    if (p[2] == "attentions" && b < nr)
      return absl::StrCat("input_blocks.", block + b, ".1.", rest);
    if (p[2] == "downsamplers" && b == 0 && rest == "conv")
      return absl::StrCat("input_blocks.", block + nr, ".0.op");
  }
  return "";
}

absl::Status Annotated(const absl::Status& s, const std::string& path) {
  return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
}

// An SD 2.x or SDXL ControlNet, recognised by what SD v1.x lacks.
absl::Status CheckFamily(const ShapeLookup& shape_of, const std::string& path) {
  auto family = [&](const char* which, const std::string& why) {
    return absl::UnimplementedError(absl::StrCat(path, ": this is a ControlNet for ", which, " (",
                                                 why, "); only SD v1.x ControlNets are supported"));
  };
  if (shape_of("label_emb.0.0.weight")) return family("SDXL", "it has a label embedding");
  const std::vector<int64_t>* to_k =
      shape_of("middle_block.1.transformer_blocks.0.attn2.to_k.weight");
  if (to_k && to_k->size() == 2 && (*to_k)[1] == 2048) return family("SDXL", "context width 2048");
  if (to_k && to_k->size() == 2 && (*to_k)[1] == 1024)
    return family("SD 2.x", "context width 1024");
  const std::vector<int64_t>* proj_in = shape_of("input_blocks.1.1.proj_in.weight");
  if (proj_in && proj_in->size() == 2)
    return family("SD 2.x", "linear projections into its transformers");
  return absl::OkStatus();
}

absl::StatusOr<ControlNetLayout> Recognise(const Checkpoint& ckpt) {
  if (ckpt.Find("controlnet_cond_embedding.conv_in.weight")) {
    if (ckpt.Find("add_embedding.linear_1.weight")) {
      return absl::UnimplementedError(
          absl::StrCat(ckpt.path(),
                       ": this is a ControlNet for SDXL (it has an added embedding); only SD v1.x "
                       "ControlNets are supported"));
    }
    return ControlNetLayout::kDiffusers;
  }
  if (ckpt.Find(std::string(kControlNetPrefix) + "input_hint_block.0.weight"))
    return ControlNetLayout::kOriginal;
  if (ckpt.Find("input_hint_block.0.weight")) return ControlNetLayout::kUnprefixed;
  return absl::InvalidArgumentError(absl::StrCat(
      ckpt.path(), ": not a ControlNet (no input_hint_block.0.weight, with or without ",
      kControlNetPrefix, ", and no diffusers controlnet_cond_embedding.conv_in.weight)"));
}

// The layout's names, mapped; keys that belong to the ControlNet but map to nothing go to
// `unmapped`.
std::map<std::string, std::string> MapNames(const Checkpoint& ckpt, ControlNetLayout layout,
                                            std::vector<std::string>* unmapped) {
  std::map<std::string, std::string> names;
  int nr = 0;
  while (ckpt.Find(absl::StrCat("down_blocks.0.resnets.", nr, ".conv1.weight"))) ++nr;
  for (const TensorView& t : ckpt.tensors()) {
    std::string name;
    if (layout == ControlNetLayout::kOriginal) {
      // ControlNet 1.0 files also carry the whole SD model they were trained with: not ours.
      if (!absl::StartsWith(t.name, kControlNetPrefix)) continue;
      name = t.name.substr(std::string(kControlNetPrefix).size());
    } else if (layout == ControlNetLayout::kUnprefixed) {
      name = t.name;
    } else {
      name = DiffusersToControlNet(t.name, nr);
    }
    if (name.empty()) {
      unmapped->push_back(t.name);
    } else {
      names[name] = t.name;
    }
  }
  return names;
}

}  // namespace

ControlNetConfig ControlNetConfig::Sd15() { return For(SdConfig::Sd15().unet); }

ControlNetConfig ControlNetConfig::For(const UNetConfig& unet) {
  ControlNetConfig c;
  c.unet = unet;
  c.unet.in_channels = 4;
  return c;
}

const std::vector<HintConv>& HintConvs() {
  static const std::vector<HintConv> convs = {{0, 16, 1}, {2, 16, 1},  {4, 32, 2},   {6, 32, 1},
                                              {8, 96, 2}, {10, 96, 1}, {12, 256, 2}, {14, 0, 1}};
  return convs;
}

std::vector<KeySpec> ControlNetKeys(const ControlNetConfig& c) {
  std::vector<KeySpec> keys = UNetTrunkKeys(c.unet, "");
  int64_t in = c.hint_channels;
  for (const HintConv& h : HintConvs()) {
    const int64_t out = h.out == 0 ? c.unet.model_channels : h.out;
    Add(keys, absl::StrCat("input_hint_block.", h.index), out, in, 3);
    in = out;
  }
  const std::vector<int64_t> skips = UNetSkipChannels(c.unet);
  for (size_t i = 0; i < skips.size(); ++i)
    Add(keys, absl::StrCat("zero_convs.", i, ".0"), skips[i], skips[i], 1);
  const int64_t mid = int64_t{c.unet.model_channels} * c.unet.channel_mult.back();
  Add(keys, "middle_block_out.0", mid, mid, 1);
  return keys;
}

const char* LayoutName(ControlNetLayout layout) {
  switch (layout) {
    case ControlNetLayout::kOriginal:
      return "original (control_model.)";
    case ControlNetLayout::kUnprefixed:
      return "original, unprefixed";
    case ControlNetLayout::kDiffusers:
      return "diffusers ControlNetModel";
  }
  return "?";
}

std::string DiffusersToControlNet(const std::string& key, int num_res_blocks) {
  std::string module, param;
  if (!SplitParam(key, &module, &param)) return "";
  const std::string m = DiffusersModule(module, num_res_blocks);
  return m.empty() ? "" : absl::StrCat(m, ".", param);
}

std::string ControlNetToDiffusers(const std::string& name, const UNetConfig& unet) {
  std::string module, param;
  if (!SplitParam(name, &module, &param)) return "";
  const std::vector<std::string> p = absl::StrSplit(module, '.');
  int a = 0;
  std::string d;
  if (module == "middle_block_out.0") {
    d = "controlnet_mid_block";
  } else if (p.size() == 3 && p[0] == "zero_convs" && Index(p[1], &a) && p[2] == "0") {
    d = absl::StrCat("controlnet_down_blocks.", a);
  } else if (p.size() == 2 && p[0] == "input_hint_block" && Index(p[1], &a) && a % 2 == 0 &&
             a <= 14) {
    d = a == 0    ? "controlnet_cond_embedding.conv_in"
        : a == 14 ? "controlnet_cond_embedding.conv_out"
                  : absl::StrCat("controlnet_cond_embedding.blocks.", a / 2 - 1);
  } else {
    d = DiffusersUNetPath(module, unet);
  }
  return d.empty() ? "" : absl::StrCat(d, ".", param);
}

bool LooksLikeControlNet(const Checkpoint& checkpoint) {
  return Recognise(checkpoint).status().code() != absl::StatusCode::kInvalidArgument;
}

absl::StatusOr<std::string> ControlNetWeightsFile(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_directory(path, ec)) return path;
  for (const char* name : {"diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"}) {
    const std::string file = (std::filesystem::path(path) / name).string();
    if (std::filesystem::is_regular_file(file, ec)) return file;
  }
  return absl::NotFoundError(
      absl::StrCat(path,
                   ": a folder without diffusion_pytorch_model.safetensors or .bin "
                   "(a diffusers ControlNetModel folder holds one)"));
}

std::string ControlNetFile::KeyOf(const std::string& name) const {
  auto it = names.find(name);
  return it == names.end() ? "" : it->second;
}

absl::StatusOr<ControlNetFile> ReadControlNetLayout(const Checkpoint& ckpt) {
  const std::string& path = ckpt.path();
  ControlNetFile f;
  absl::StatusOr<ControlNetLayout> layout = Recognise(ckpt);
  if (!layout.ok()) return layout.status();
  f.layout = *layout;
  std::vector<std::string> extra;
  f.names = MapNames(ckpt, f.layout, &extra);
  const ShapeLookup shape_of = [&](const std::string& name) -> const std::vector<int64_t>* {
    auto it = f.names.find(name);
    return it == f.names.end() ? nullptr : ckpt.ShapeOf(it->second);
  };
  if (absl::Status s = CheckFamily(shape_of, path); !s.ok()) return s;
  absl::StatusOr<UNetConfig> unet = DetectUNetTrunk(shape_of, "");
  if (!unet.ok())
    return Annotated(unet.status(),
                     absl::StrCat(path, " (a ControlNet, ", LayoutName(f.layout), ")"));
  f.config.unet = *unet;
  const std::vector<int64_t>* hint = shape_of("input_hint_block.0.weight");
  if (!hint || hint->size() != 4)
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": input_hint_block.0.weight must be a 4-d convolution"));
  f.config.hint_channels = static_cast<int>((*hint)[1]);
  KeyCheck check;
  std::set<std::string> expected;
  for (const KeySpec& k : ControlNetKeys(f.config)) {
    expected.insert(k.name);
    const std::vector<int64_t>* s = shape_of(k.name);
    if (!s) {
      check.missing.push_back(f.layout == ControlNetLayout::kOriginal ? kControlNetPrefix + k.name
                                                                      : k.name);
    } else if (*s != k.shape) {
      check.mismatched.push_back({f.KeyOf(k.name), k.shape, *s});
    }
  }
  for (const auto& [name, key] : f.names) {
    if (!expected.count(name)) extra.push_back(key);
  }
  if (check.ok() && extra.empty()) return f;
  absl::Status s = check.ok() ? absl::FailedPreconditionError(path) : check.ToStatus(path);
  if (extra.empty()) return s;
  std::string msg(s.message());
  absl::StrAppend(&msg, "\n  ", extra.size(), " extra tensor(s) a ControlNet (",
                  LayoutName(f.layout), ") does not have");
  for (size_t i = 0; i < extra.size() && i < 10; ++i)
    absl::StrAppend(&msg, "\n  extra: ", extra[i]);
  if (extra.size() > 10) absl::StrAppend(&msg, "\n  ...");
  return absl::FailedPreconditionError(msg);
}

}  // namespace sd

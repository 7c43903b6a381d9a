#include "nodes/weights/lora_keys.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"

namespace sd {
namespace {

constexpr char kTextPrefix[] = "cond_stage_model.transformer.";  // then HF's text_model....

// LDM ResBlock names -> diffusers ResnetBlock2D names.
const std::vector<std::pair<std::string, std::string>>& ResnetRenames() {
  static const std::vector<std::pair<std::string, std::string>> r = {
      {"in_layers.0", "norm1"},  {"in_layers.2", "conv1"},  {"emb_layers.1", "time_emb_proj"},
      {"out_layers.0", "norm2"}, {"out_layers.3", "conv2"}, {"skip_connection", "conv_shortcut"}};
  return r;
}

std::string Resnet(const std::string& rest) {
  for (const auto& [ldm, diffusers] : ResnetRenames()) {
    if (rest == ldm) return diffusers;
  }
  return "";
}

std::string Underscored(const std::string& path) { return absl::StrReplaceAll(path, {{".", "_"}}); }

}  // namespace

std::string DiffusersUNetPath(const std::string& ldm, const UNetConfig& unet) {
  static const std::map<std::string, std::string> fixed = {
      {"input_blocks.0.0", "conv_in"},
      {"time_embed.0", "time_embedding.linear_1"},
      {"time_embed.2", "time_embedding.linear_2"},
      {"out.0", "conv_norm_out"},
      {"out.2", "conv_out"}};
  if (auto it = fixed.find(ldm); it != fixed.end()) return it->second;
  const std::vector<std::string> p = absl::StrSplit(ldm, absl::MaxSplits('.', 2));
  int block = 0, sub = 0;
  if (p.size() != 3 && !(p.size() == 2 && p[0] == "middle_block")) return "";
  const std::vector<std::string> q =
      absl::StrSplit(p.size() == 3 ? p[2] : "", absl::MaxSplits('.', 1));
  if (!absl::SimpleAtoi(p[1], &block)) return "";
  const int per_level = unet.num_res_blocks + 1,
            levels = static_cast<int>(unet.channel_mult.size());
  if (p[0] == "middle_block") {
    // middle_block.S.rest: S is p[1]; rest is p[2].
    const std::string rest = p.size() == 3 ? p[2] : "";
    if (block == 1) return absl::StrCat("mid_block.attentions.0.", rest);
    if (block == 0 || block == 2) {
      const std::string r = Resnet(rest);
      return r.empty() ? "" : absl::StrCat("mid_block.resnets.", block / 2, ".", r);
    }
    return "";
  }
  if (q.size() != 2 || !absl::SimpleAtoi(q[0], &sub)) return "";
  const std::string& rest = q[1];
  if (p[0] == "input_blocks" && block >= 1) {
    const int level = (block - 1) / per_level, j = (block - 1) % per_level;
    if (level >= levels) return "";
    if (j == unet.num_res_blocks) {  // the level's downsampler
      return sub == 0 && rest == "op" ? absl::StrCat("down_blocks.", level, ".downsamplers.0.conv")
                                      : "";
    }
    if (sub == 0) {
      const std::string r = Resnet(rest);
      return r.empty() ? "" : absl::StrCat("down_blocks.", level, ".resnets.", j, ".", r);
    }
    if (sub == 1 && unet.attention[static_cast<size_t>(level)])
      return absl::StrCat("down_blocks.", level, ".attentions.", j, ".", rest);
    return "";
  }
  if (p[0] == "output_blocks") {
    const int up = block / per_level, j = block % per_level, level = levels - 1 - up;
    if (level < 0) return "";
    const bool attends = unet.attention[static_cast<size_t>(level)];
    if (sub == 0) {
      const std::string r = Resnet(rest);
      return r.empty() ? "" : absl::StrCat("up_blocks.", up, ".resnets.", j, ".", r);
    }
    if (sub == 1 && attends) return absl::StrCat("up_blocks.", up, ".attentions.", j, ".", rest);
    if (sub == (attends ? 2 : 1) && j == unet.num_res_blocks && level > 0 && rest == "conv")
      return absl::StrCat("up_blocks.", up, ".upsamplers.0.conv");
    return "";
  }
  return "";
}

LoraKeyTable LoraKeyTable::ForModel(const std::vector<KeySpec>& keys, const UNetConfig& unet) {
  LoraKeyTable t;
  auto add = [&](const std::string& name, const LoraTarget& target) {
    auto [it, inserted] = t.names_.emplace(name, target);
    if (!inserted && it->second.key != target.key) t.collisions_.push_back(name);
  };
  for (const KeySpec& k : keys) {
    if (!absl::EndsWith(k.name, ".weight") || (k.shape.size() != 2 && k.shape.size() != 4))
      continue;
    const std::string module = k.name.substr(0, k.name.size() - 7);
    if (absl::StartsWith(module, kUNetPrefix)) {
      const std::string ldm = module.substr(std::string(kUNetPrefix).size());
      const LoraTarget target{k.name, LoraComponent::kUNet};
      add(module, target);
      add("lora_unet_" + Underscored(ldm), target);
      if (const std::string diffusers = DiffusersUNetPath(ldm, unet); !diffusers.empty()) {
        add("unet." + diffusers, target);
        add("lora_unet_" + Underscored(diffusers), target);
      }
    } else if (absl::StartsWith(module, kTextPrefix)) {
      const std::string hf =
          module.substr(std::string(kTextPrefix).size());  // text_model.encoder...
      const LoraTarget target{k.name, LoraComponent::kText};
      add(module, target);
      add("text_encoder." + hf, target);
      add("lora_te_" + Underscored(hf), target);
    }
  }
  return t;
}

const LoraTarget* LoraKeyTable::Find(const std::string& name) const {
  auto it = names_.find(name);
  return it == names_.end() ? nullptr : &it->second;
}

bool SplitLoraKey(const std::string& key, std::string* name, std::string* part) {
  static const std::vector<std::pair<std::string, std::string>> suffixes = {
      {".lora_down.weight", "down"}, {".lora_up.weight", "up"}, {".lora_mid.weight", "mid"},
      {".lora_A.weight", "down"},    {".lora_B.weight", "up"},  {".lora.down.weight", "down"},
      {".lora.up.weight", "up"},     {".alpha", "alpha"}};
  for (const auto& [suffix, p] : suffixes) {
    if (absl::EndsWith(key, suffix) && key.size() > suffix.size()) {
      *name = key.substr(0, key.size() - suffix.size());
      *part = p;
      return true;
    }
  }
  return false;
}

}  // namespace sd

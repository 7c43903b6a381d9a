// The graph file of a translated ComfyUI workflow (comfy_import_internal.h), and the one model it
// runs with.
#include <google/protobuf/text_format.h>

#include <algorithm>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "host_plugin/runtime/comfy_import_internal.h"
#include "nodes/base/status_macros.h"

namespace sd::comfy_import {

namespace {

using Users = std::vector<std::pair<std::string, Handle>>;

bool AllEqual(const Users& users) {
  return std::all_of(users.begin(), users.end(),
                     [&](const auto& u) { return u.second == users.front().second; });
}

// Adds `input` to the node named `name`, wherever the blocks hold it.
absl::Status AddInput(ComfyTranslation& t, const std::string& name, const std::string& input) {
  auto add = [&](auto& nodes) {
    for (v1::Node& n : nodes) {
      if (n.name() != name) continue;
      n.add_input(input);
      return true;
    }
    return false;
  };
  for (Block& b : t.blocks) {
    if (add(b.nodes)) return absl::OkStatus();
    for (v1::Loop& l : b.loops) {
      if (add(*l.mutable_node())) return absl::OkStatus();
    }
  }
  return absl::InternalError(absl::StrCat("import-comfy: no node '", name, "' to give ", input));
}

// The ApplyLora chains of the samplers' UNet steps (side "unet") and the encoders' ClipEncodes
// (side "text"): node <loader id>_<side> per LoraLoader, shared by every chain through it.
absl::Status AddLoraNodes(const ComfyImportOptions& options, ComfyTranslation& t) {
  Block b;
  b.comment =
      "LoRAs (LoraLoader): the samplers and text encoders do not all use the same ones, so each "
      "computes with its own chain";
  std::set<std::string> made;
  auto chain = [&](const Handle& h, bool unet) -> absl::StatusOr<std::string> {
    std::string previous;
    for (const HandleLora& lora : h.loras) {
      const std::string owner = Safe(lora.node);
      const std::string name = owner + (unet ? "_unet" : "_text");
      if (made.insert(name).second) {
        std::string file = lora.name;
        if (options.lora_file) {
          auto found = options.lora_file(file);
          if (!found.ok()) return found.status();
          file = *found;
        }
        v1::Node& n = b.nodes.emplace_back();
        n.set_kind("ApplyLora");
        n.set_name(name);
        if (!previous.empty()) n.add_input("model=" + previous + ".model");
        n.add_input("lora=" + AddParam(t, "lora", owner, file, "a LoRA file (LoraLoader)"));
        n.add_input(absl::StrCat(unet ? "unet=" : "text=",
                                 AddParam(t, unet ? "lora_unet" : "lora_text", owner, lora.strength,
                                          unet ? "the LoRA's strength on the UNet"
                                               : "the LoRA's strength on the text encoder")));
        n.add_input(unet ? "text=#0" : "unet=#0");
      }
      previous = name;
    }
    return previous;
  };
  for (const auto& [users, unet] : {std::pair{&t.model_users, true}, {&t.clip_users, false}}) {
    for (const auto& [id, h] : *users) {
      if (h.loras.empty()) continue;
      auto last = chain(h, unet);
      if (!last.ok()) return last.status();
      for (const char* node : unet ? std::vector<const char*>{"_cond", "_uncond"}
                                   : std::vector<const char*>{"_clip"}) {
        SD_RETURN_IF_ERROR(AddInput(t, id + node, "model=" + *last + ".model"));
      }
    }
  }
  t.blocks.insert(t.blocks.begin(), std::move(b));
  return absl::OkStatus();
}

}  // namespace

absl::Status ChooseComfyModel(const std::string& file, const ComfyImportOptions& options,
                              ComfyTranslation& t, ComfyModel* m) {
  // One checkpoint: LoRAs may differ (below), checkpoints may not.
  auto agree = [&](const Users& users, const char* what, bool whole) -> absl::Status {
    for (const auto& [id, h] : users) {
      const Handle& first = users.front().second;
      if (whole ? !(h == first) : h.checkpoint != first.checkpoint) {
        return absl::InvalidArgumentError(
            absl::StrCat("workflow ", file, ": node ", id, " uses a different ", what, " (",
                         Describe(h), ") than node ", users.front().first, " (", Describe(first),
                         "); one ", whole ? "model" : "checkpoint", " per workflow is supported"));
      }
    }
    return absl::OkStatus();
  };
  SD_RETURN_IF_ERROR(agree(t.model_users, "MODEL", false));
  SD_RETURN_IF_ERROR(agree(t.clip_users, "CLIP", false));
  SD_RETURN_IF_ERROR(agree(t.vae_users, "VAE", true));
  if (t.model_users.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("workflow ", file, ": has no KSampler: nothing to compute with"));
  }
  const Handle& model = t.model_users.front().second;
  m->checkpoint = model.checkpoint;
  if (!t.clip_users.empty() && t.clip_users.front().second.checkpoint != model.checkpoint) {
    return absl::InvalidArgumentError(
        absl::StrCat("workflow ", file, ": the text encoder comes from checkpoint '",
                     t.clip_users.front().second.checkpoint, "' but the UNet from '",
                     model.checkpoint, "'; one checkpoint per workflow is supported"));
  }
  if (!t.vae_users.empty()) {
    const Handle& vae = t.vae_users.front().second;
    if (vae.vae.empty() && vae.checkpoint != model.checkpoint) {
      return absl::InvalidArgumentError(
          absl::StrCat("workflow ", file, ": the VAE comes from checkpoint '", vae.checkpoint,
                       "' but the UNet from '", model.checkpoint, "'"));
    }
    m->vae = vae.vae;
  }
  m->controlnets = t.control_files;
  if (!AllEqual(t.model_users) || !AllEqual(t.clip_users)) return AddLoraNodes(options, t);
  for (const HandleLora& l : model.loras) m->loras.push_back({l.name, l.strength, 0.0});
  if (!t.clip_users.empty()) {
    for (const auto& lora : t.clip_users.front().second.loras) {
      auto it = std::find_if(m->loras.begin(), m->loras.end(), [&](const ComfyLora& l) {
        return l.name == lora.name && l.text == 0;
      });
      if (it != m->loras.end()) {
        it->text = lora.strength;
      } else {
        m->loras.push_back({lora.name, 0.0, lora.strength});
      }
    }
  }
  return absl::OkStatus();
}

std::string RenderComfyGraph(const std::string& file, const ComfyTranslation& t,
                             const ComfyModel& m) {
  // Names: equal values of one meaning share the plain name; differing ones get the node id.
  std::map<std::string, std::vector<size_t>> by_base;
  for (size_t i = 0; i < t.params.size(); ++i) by_base[t.params[i].base].push_back(i);
  std::vector<std::pair<std::string, std::string>> tokens;
  std::vector<v1::GraphInput> inputs;
  std::set<std::string> declared;
  for (size_t i = 0; i < t.params.size(); ++i) {
    const Param& p = t.params[i];
    const auto& group = by_base[p.base];
    const bool same = std::all_of(group.begin(), group.end(),
                                  [&](size_t j) { return t.params[j].value == p.value; });
    const std::string name = same ? p.base : p.base + "_" + p.owner;
    tokens.emplace_back(absl::StrCat("$P", i, "$"), "@" + name);
    if (!declared.insert(name).second) continue;
    v1::GraphInput& in = inputs.emplace_back();
    in.set_name(name);
    in.set_doc(same && group.size() > 1 ? p.doc : absl::StrCat(p.doc, " (node ", p.owner, ")"));
    if (const auto* s = std::get_if<std::string>(&p.value)) {
      in.mutable_type()->set_kind(v1::STRING);
      in.mutable_default_value()->set_s(*s);
    } else if (const auto* i64 = std::get_if<int64_t>(&p.value)) {
      in.mutable_type()->set_kind(v1::INT);
      in.mutable_default_value()->set_i(*i64);
    } else {
      in.mutable_type()->set_kind(v1::FLOAT);
      in.mutable_default_value()->set_f(std::get<double>(p.value));
    }
  }
  google::protobuf::TextFormat::Printer line;
  line.SetSingleLineMode(true);
  line.SetExpandAny(true);  // options as [type.googleapis.com/sd.v1.NoiseOptions] { ... }
  auto print = [&](const google::protobuf::Message& msg) {
    std::string s;
    line.PrintToString(msg, &s);
    while (!s.empty() && s.back() == ' ') s.pop_back();
    return s;
  };
  std::string out = absl::StrCat(
      "# Imported from the ComfyUI workflow ", OneLine(file), " by sd-graph import-comfy.\n",
      "# Each ComfyUI node became the nodes named after its id; its widget values are "
      "graph inputs.\n# The workflow's model: checkpoint '",
      OneLine(m.checkpoint), "'");
  if (!m.vae.empty()) absl::StrAppend(&out, ", VAE '", OneLine(m.vae), "'");
  for (const ComfyLora& l : m.loras) {
    absl::StrAppend(&out, ", LoRA '", OneLine(l.name), "' (UNet ", l.unet, ", text ", l.text, ")");
  }
  for (size_t i = 0; i < m.controlnets.size(); ++i)
    absl::StrAppend(&out, ", ControlNet ", i, " '", OneLine(m.controlnets[i]), "'");
  absl::StrAppend(&out,
                  "\n# (sd-graph run takes it from --model, --vae, --lora and --controlnet, in "
                  "this order; run on\n"
                  "# the workflow itself, it finds the files in --comfy-models).\n\n");
  for (const v1::GraphInput& in : inputs) absl::StrAppend(&out, "input { ", print(in), " }\n");
  absl::StrAppend(
      &out,
      "input { name: \"weighting\" type { kind: STRING } default_value { s: \"comfy\" } "
      "doc: \"prompt weighting syntax, as ComfyUI\" }\n");
  for (const Block& b : t.blocks) {
    absl::StrAppend(&out, "\n# ", OneLine(b.comment), "\n");
    for (const v1::Node& n : b.nodes) absl::StrAppend(&out, "node { ", print(n), " }\n");
    for (const v1::Loop& l : b.loops) {
      absl::StrAppend(&out, "loop {\n  name: \"", l.name(), "\"\n  timesteps: \"", l.timesteps(),
                      "\"\n");
      for (const v1::Carry& c : l.carry()) absl::StrAppend(&out, "  carry { ", print(c), " }\n");
      for (const v1::Node& n : l.node()) absl::StrAppend(&out, "  node { ", print(n), " }\n");
      absl::StrAppend(&out, "}\n");
    }
    for (const v1::Node& n : b.after) absl::StrAppend(&out, "node { ", print(n), " }\n");
  }
  absl::StrAppend(&out, "\n");
  for (const auto& [name, source] : t.outputs) {
    absl::StrAppend(&out, "output { name: \"", name, "\" source: \"", source, "\" }\n");
  }
  return absl::StrReplaceAll(out, tokens);
}

}  // namespace sd::comfy_import

// The graph file of a translated ComfyUI workflow (comfy_import_internal.h), and the one model it
// runs with.
#include <google/protobuf/text_format.h>

#include <algorithm>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "host_plugin/runtime/comfy_import_internal.h"

namespace sd::comfy_import {

absl::Status ChooseComfyModel(const std::string& file, const ComfyTranslation& t, ComfyModel* m) {
  auto agree = [&](const std::vector<std::pair<std::string, Handle>>& users,
                   const char* what) -> absl::Status {
    for (const auto& [id, h] : users) {
      if (!(h == users.front().second)) {
        return absl::InvalidArgumentError(
            absl::StrCat("workflow ", file, ": node ", id, " uses a different ", what, " (",
                         Describe(h), ") than node ", users.front().first, " (",
                         Describe(users.front().second), "); one model per workflow is supported"));
      }
    }
    return absl::OkStatus();
  };
  for (const auto* users : {&t.model_users, &t.clip_users, &t.vae_users}) {
    const char* what = users == &t.model_users ? "MODEL" : users == &t.clip_users ? "CLIP" : "VAE";
    if (absl::Status s = agree(*users, what); !s.ok()) return s;
  }
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
  for (const auto& [name, w] : model.loras) m->loras.push_back({name, w, 0.0});
  if (!t.clip_users.empty()) {
    for (const auto& lora : t.clip_users.front().second.loras) {
      auto it = std::find_if(m->loras.begin(), m->loras.end(), [&](const ComfyLora& l) {
        return l.name == lora.first && l.text == 0;
      });
      if (it != m->loras.end()) {
        it->text = lora.second;
      } else {
        m->loras.push_back({lora.first, 0.0, lora.second});
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

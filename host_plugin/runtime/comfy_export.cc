#include "host_plugin/runtime/comfy_export.h"

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nodes/weights/model_ref.h"
#include "proto/sd/v1/nodes.pb.h"

namespace sd {
namespace {

using json = nlohmann::json;

class Exporter {
 public:
  Exporter(const v1::GraphConfig& g, std::string file, ComfyExportOptions o)
      : g_(g), file_(std::move(file)), options_(std::move(o)) {
    for (const v1::GraphInput& in : g_.input()) inputs_[in.name()] = &in;
    for (const v1::Node& n : g_.node()) nodes_[n.name()] = &n;
    for (const v1::Loop& l : g_.loop()) loops_[l.name()] = &l;
  }

  absl::StatusOr<std::string> Run() {
    const json checkpoint = Add("CheckpointLoaderSimple", {{"ckpt_name", options_.checkpoint}});
    model_ = Slot(checkpoint, 0);
    clip_ = Slot(checkpoint, 1);
    vae_ =
        options_.vae.empty() ? Slot(checkpoint, 2) : Add("VAELoader", {{"vae_name", options_.vae}});
    for (const ComfyLora& l : options_.loras) {
      const json lora = Add("LoraLoader", {{"model", model_},
                                           {"clip", clip_},
                                           {"lora_name", l.name},
                                           {"strength_model", l.unet},
                                           {"strength_clip", l.text}});
      model_ = Slot(lora, 0);
      clip_ = Slot(lora, 1);
    }
    // In passes: a node whose sources are not exported yet waits for the next (a graph file need
    // not list its nodes in order).
    std::vector<const v1::Node*> pending;
    for (const v1::Node& n : g_.node()) pending.push_back(&n);
    absl::Status waiting;
    while (!pending.empty()) {
      std::vector<const v1::Node*> later;
      for (const v1::Node* n : pending) {
        absl::Status s = Export(*n);
        if (s.code() == absl::StatusCode::kUnavailable) {
          later.push_back(n);
          waiting = s;
        } else if (!s.ok()) {
          return s;
        }
      }
      if (later.size() == pending.size()) break;
      pending = std::move(later);
    }
    for (const v1::Loop& l : g_.loop()) {
      if (!sampler_loops_.count(l.name())) Unsupported(l.name(), "loop");
    }
    if (!unsupported_.empty() || !pending.empty()) {
      if (unsupported_.empty()) return Error(std::string(waiting.message()));
      return absl::InvalidArgumentError(absl::StrCat(
          "graph ", file_, ": no ComfyUI equivalent for ", absl::StrJoin(unsupported_, ", "),
          " (ComfyUI's samplers are SigmaSchedule → SigmaStart → "
          "SigmaStep → SigmaEnd; the stock graphs use the reference's)"));
    }
    for (const v1::GraphOutput& o : g_.output()) {
      auto [node, port] = Split(o.source());
      auto it = nodes_.find(node);
      if (it == nodes_.end() ||
          (it->second->kind() != "TensorToImage" && it->second->kind() != "TensorToImages")) {
        return Error(absl::StrCat("output '", o.name(),
                                  "' is not an image (TensorToImage or TensorToImages)"));
      }
    }
    return workflow_.dump(2) + "\n";
  }

 private:
  absl::Status Error(const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat("graph ", file_, ": ", what));
  }
  void Unsupported(const std::string& name, const std::string& kind) {
    unsupported_.push_back(absl::StrCat("'", name, "' (", kind, ")"));
  }
  static std::pair<std::string, std::string> Split(const std::string& source) {
    const size_t dot = source.find('.');
    return {source.substr(0, dot), dot == std::string::npos ? "" : source.substr(dot + 1)};
  }
  // The source wired to `port` of `n` ("" when unwired).
  static std::string In(const v1::Node& n, const std::string& port) {
    for (const std::string& in : n.input()) {
      if (in.rfind(port + "=", 0) == 0) return in.substr(port.size() + 1);
    }
    return "";
  }
  const v1::Node* NodeAt(const std::string& source) const {
    auto it = nodes_.find(Split(source).first);
    return it == nodes_.end() ? nullptr : it->second;
  }
  // A widget value: the default of the graph input `source` names (`fallback` when unwired).
  absl::StatusOr<json> Widget(const v1::Node& n, const std::string& port,
                              json fallback = nullptr) const {
    const std::string source = In(n, port);
    if (source.empty()) {
      if (fallback.is_null())
        return Error(absl::StrCat("node '", n.name(), "': input '", port, "' is not wired"));
      return fallback;
    }
    auto it = source[0] == '@' ? inputs_.find(source.substr(1)) : inputs_.end();
    if (it == inputs_.end() || it->second->default_value().kind_case() == v1::Value::KIND_NOT_SET) {
      return Error(absl::StrCat("node '", n.name(), "': input '", port, "' comes from '", source,
                                "'; a ComfyUI widget needs a graph input with a default value"));
    }
    const v1::Value& v = it->second->default_value();
    if (v.kind_case() == v1::Value::kS) return json(v.s());
    if (v.kind_case() == v1::Value::kI) return json(v.i());
    if (v.kind_case() == v1::Value::kF) return json(v.f());
    return Error(absl::StrCat("graph input '", it->first, "' of node '", n.name(),
                              "' is not a widget value"));
  }
  // A link to what our source `source` became.
  absl::StatusOr<json> Link(const v1::Node& n, const std::string& port) const {
    const std::string source = In(n, port);
    auto it = links_.find(source);
    const std::string from = Split(source).first;
    if (it == links_.end() && (nodes_.count(from) || loops_.count(from))) {  // not yet, or never
      return absl::UnavailableError(absl::StrCat("node '", n.name(), "': input '", port,
                                                 "' reads '", source,
                                                 "', which has no ComfyUI equivalent"));
    }
    if (it == links_.end()) {
      return Error(absl::StrCat("node '", n.name(), "': input '", port, "' reads '", source,
                                "', which has no ComfyUI equivalent"));
    }
    return it->second;
  }
  // What loaders hand on: the model, CLIP and VAE links.
  struct Loaded {
    json model, clip, vae;
  };
  // What a node computes with: its `model` input's ApplyLora/ApplyVae chain, else the checkpoint's
  // (after the run's LoRAs and VAE). UNAVAILABLE while that chain is not exported yet.
  absl::StatusOr<Loaded> ModelOf(const v1::Node& n) const {
    const std::string source = In(n, "model");
    if (source.empty()) return Loaded{model_, clip_, vae_};
    if (auto it = models_.find(source); it != models_.end()) return it->second;
    const v1::Node* from = NodeAt(source);
    if (from && (from->kind() == "ApplyLora" || from->kind() == "ApplyVae")) {
      return absl::UnavailableError(
          absl::StrCat("node '", n.name(), "': its model '", source, "' is not exported"));
    }
    return Error(absl::StrCat("node '", n.name(), "': input 'model' reads '", source,
                              "'; ComfyUI's models come from loaders (ApplyLora, ApplyVae here)"));
  }
  json Add(const std::string& class_type, json inputs, const std::string& title = "") {
    const std::string id = std::to_string(++next_id_);
    workflow_[id] = {{"class_type", class_type}, {"inputs", std::move(inputs)}};
    if (!title.empty()) workflow_[id]["_meta"] = {{"title", title}};
    return json::array({id, 0});
  }
  static json Slot(json link, int slot) {
    link[1] = slot;
    return link;
  }

  absl::Status Export(const v1::Node& n);
  absl::Status Lora(const v1::Node& n);
  absl::Status Vae(const v1::Node& n);
  absl::Status Prompt(const v1::Node& n);
  absl::Status Sampler(const v1::Node& end);
  absl::StatusOr<json> Controlled(const v1::Node& unet, json cond,
                                  const std::map<std::string, const v1::Node*>& body);
  absl::Status Scale(const v1::Node& n);

  const v1::GraphConfig& g_;
  std::string file_;
  ComfyExportOptions options_;
  std::map<std::string, const v1::GraphInput*> inputs_;
  std::map<std::string, const v1::Node*> nodes_;
  std::map<std::string, const v1::Loop*> loops_;
  std::map<std::string, json> links_;  // our "node.port" -> ComfyUI [id, slot]
  std::map<std::pair<std::string, int64_t>, json> clips_;  // (CLIP, clip skip) -> the CLIP link
  std::map<std::string, Loaded> models_;                   // "NODE.model" of ApplyLora, ApplyVae
  std::set<std::string> sampler_loops_;
  std::map<std::string, bool>
      inpaint_masks_;  // InpaintPrepare masks: VAEEncodeForInpaint carries them
  std::vector<std::string> unsupported_;
  json workflow_ = json::object();
  json model_, clip_, vae_;  // what the loaders hand on
  std::map<int, json> control_loaders_;  // ControlNet index -> its ControlNetLoader
  int next_id_ = 0;
};

#define SD_WIDGET(var, expr)                    \
  auto var##_or = (expr);                       \
  if (!var##_or.ok()) return var##_or.status(); \
  json var = *var##_or

absl::Status Exporter::Export(const v1::Node& n) {
  const std::string& k = n.kind();
  // Consumed by what reads them: prompts' first stages, a sampler's schedule, start and noise.
  if (k == "TokenizePrompt" || k == "ClipEncode" || k == "SigmaSchedule" || k == "SigmaStart" ||
      k == "Noise" || k == "InpaintPrepare" || k == "ControlHint") {
    return absl::OkStatus();
  }
  if (k == "ApplyPromptWeights") return Prompt(n);
  if (k == "ApplyLora") return Lora(n);
  if (k == "ApplyVae") return Vae(n);
  if (k == "SigmaEnd") return Sampler(n);
  if (k == "EmptyLatent") {
    SD_WIDGET(w, Widget(n, "width"));
    SD_WIDGET(h, Widget(n, "height"));
    SD_WIDGET(b, Widget(n, "batch", 1));
    links_[n.name() + ".latents"] =
        Add("EmptyLatentImage", {{"width", w}, {"height", h}, {"batch_size", b}});
    return absl::OkStatus();
  }
  // VaeDecode and VaeEncode read the VAE of their model.
  const absl::StatusOr<Loaded> model = ModelOf(n);
  if ((k == "VaeDecode" || k == "VaeEncode") && !model.ok()) return model.status();
  const json vae = model.ok() ? model->vae : vae_;
  if (k == "VaeDecode") {
    SD_WIDGET(samples, Link(n, "latents"));
    links_[n.name() + ".image"] = Add("VAEDecode", {{"samples", samples}, {"vae", vae}});
    return absl::OkStatus();
  }
  if (k == "VaeEncode") {
    const v1::Node* prep = NodeAt(In(n, "image"));
    if (prep && prep->kind() == "InpaintPrepare") {
      SD_WIDGET(pixels, Link(*prep, "image"));
      SD_WIDGET(mask, Link(*prep, "mask"));
      SD_WIDGET(grow, Widget(*prep, "grow", 6));
      links_[n.name() + ".latents"] =
          Add("VAEEncodeForInpaint",
              {{"pixels", pixels}, {"vae", vae}, {"mask", mask}, {"grow_mask_by", grow}});
      inpaint_masks_[prep->name() + ".mask"] = true;
      return absl::OkStatus();
    }
    SD_WIDGET(pixels, Link(n, "image"));
    links_[n.name() + ".latents"] = Add("VAEEncode", {{"pixels", pixels}, {"vae", vae}});
    return absl::OkStatus();
  }
  if (k == "LoadImage") {
    SD_WIDGET(path, Widget(n, "path"));
    links_[n.name() + ".pixels"] = Add("LoadImage", {{"image", path}});
    return absl::OkStatus();
  }
  if (k == "ImageToTensor") {
    const v1::Node* file = NodeAt(In(n, "pixels"));
    if (!file || file->kind() != "LoadImage") {
      Unsupported(n.name(), k + " of something other than LoadImage");
      return absl::OkStatus();
    }
    SD_WIDGET(pixels, Link(n, "pixels"));
    links_[n.name() + ".image"] = pixels;
    return absl::OkStatus();
  }
  if (k == "LoadImageMask") {
    SD_WIDGET(path, Widget(n, "path"));
    SD_WIDGET(channel, Widget(n, "channel", "alpha"));
    links_[n.name() + ".mask"] = Add("LoadImageMask", {{"image", path}, {"channel", channel}});
    return absl::OkStatus();
  }
  if (k == "MaskInvert" || k == "ImageInvert") {
    const bool mask = k == "MaskInvert";
    SD_WIDGET(from, Link(n, mask ? "mask" : "image"));
    links_[n.name() + (mask ? ".mask" : ".image")] =
        Add(mask ? "InvertMask" : "ImageInvert", {{mask ? "mask" : "image", from}});
    return absl::OkStatus();
  }
  if (k == "LatentUpscale" || k == "ImageScale") return Scale(n);
  if (k == "BatchSelect" || k == "BatchRepeat") {
    const bool select = k == "BatchSelect";
    SD_WIDGET(samples, Link(n, "tensor"));
    json inputs = {{"samples", samples}};
    if (select) {
      SD_WIDGET(index, Widget(n, "index"));
      SD_WIDGET(length, Widget(n, "length", 1));
      inputs["batch_index"] = index;
      inputs["length"] = length;
    } else {
      SD_WIDGET(amount, Widget(n, "amount"));
      inputs["amount"] = amount;
    }
    links_[n.name() + ".tensor"] = Add(select ? "LatentFromBatch" : "RepeatLatentBatch", inputs);
    return absl::OkStatus();
  }
  if (k == "TensorToImage" || k == "TensorToImages") {
    SD_WIDGET(images, Link(n, "image"));
    Add("SaveImage", {{"images", images}, {"filename_prefix", options_.filename_prefix}});
    return absl::OkStatus();
  }
  Unsupported(n.name(), k);
  return absl::OkStatus();
}

// ApplyLora: a LoraLoader after its model's loaders; with no LoRA, its model as it is.
absl::Status Exporter::Lora(const v1::Node& n) {
  auto base = ModelOf(n);
  if (!base.ok()) return base.status();
  SD_WIDGET(spec, Widget(n, "lora", ""));
  if (!spec.is_string() || spec.get<std::string>().empty()) {
    models_[n.name() + ".model"] = *base;
    return absl::OkStatus();
  }
  auto lora = ParseLoraSpec(spec.get<std::string>());
  if (!lora.ok()) return Error(absl::StrCat("node '", n.name(), "': ", lora.status().message()));
  SD_WIDGET(unet, Widget(n, "unet", lora->unet));
  SD_WIDGET(text, Widget(n, "text", lora->text));
  const json loader =
      Add("LoraLoader", {{"model", base->model},
                         {"clip", base->clip},
                         {"lora_name", std::filesystem::path(lora->name).filename().string()},
                         {"strength_model", unet},
                         {"strength_clip", text}});
  models_[n.name() + ".model"] = {Slot(loader, 0), Slot(loader, 1), base->vae};
  return absl::OkStatus();
}

// ApplyVae: a VAELoader; with no VAE, its model as it is.
absl::Status Exporter::Vae(const v1::Node& n) {
  auto base = ModelOf(n);
  if (!base.ok()) return base.status();
  SD_WIDGET(vae, Widget(n, "vae", ""));
  Loaded loaded = *base;
  if (vae.is_string() && !vae.get<std::string>().empty()) {
    loaded.vae =
        Add("VAELoader",
            {{"vae_name", std::filesystem::path(vae.get<std::string>()).filename().string()}});
  }
  models_[n.name() + ".model"] = std::move(loaded);
  return absl::OkStatus();
}

absl::Status Exporter::Prompt(const v1::Node& n) {
  const v1::Node* clip = NodeAt(In(n, "context"));
  const v1::Node* tok = NodeAt(In(n, "weights"));
  if (!clip || clip->kind() != "ClipEncode" || !tok || tok->kind() != "TokenizePrompt" ||
      NodeAt(In(*clip, "tokens")) != tok) {
    Unsupported(n.name(), "ApplyPromptWeights not fed by one TokenizePrompt and its ClipEncode");
    return absl::OkStatus();
  }
  SD_WIDGET(weighting, Widget(n, "weighting", "a1111"));
  if (weighting != "comfy") {
    Unsupported(n.name(), absl::StrCat("ApplyPromptWeights with weighting ", weighting.dump(),
                                       "; ComfyUI's is comfy"));
    return absl::OkStatus();
  }
  auto model = ModelOf(*clip);
  if (!model.ok()) return model.status();
  SD_WIDGET(text, Widget(*tok, "text"));
  SD_WIDGET(skip, Widget(*clip, "clip_skip", 1));
  const int64_t s = skip.get<int64_t>();
  const json& base = model->clip;
  const std::pair<std::string, int64_t> key{base.dump(), s};
  if (!clips_.count(key)) {
    clips_[key] =
        s == 1 ? base : Add("CLIPSetLastLayer", {{"clip", base}, {"stop_at_clip_layer", -s}});
  }
  links_[n.name() + ".context"] = Add("CLIPTextEncode", {{"text", text}, {"clip", clips_[key]}});
  return absl::OkStatus();
}

// ComfyUI attaches ControlNets to a conditioning: the UNet step's chain of ControlNet nodes (first
// to last) becomes ControlNetApplyAdvanced nodes on `cond` (given as both of its halves; output 0
// used).
absl::StatusOr<json> Exporter::Controlled(const v1::Node& unet, json cond,
                                          const std::map<std::string, const v1::Node*>& body) {
  std::vector<const v1::Node*> chain;
  for (std::string source = In(unet, "control"); !source.empty();) {
    auto it = body.find(Split(source).first);
    if (it == body.end() || it->second->kind() != "ControlNet" || chain.size() > 64) {
      Unsupported(unet.name(),
                  "UNetStep whose control is not a chain of ControlNet nodes in its loop");
      return cond;
    }
    chain.insert(chain.begin(), it->second);
    source = In(*it->second, "residuals");
  }
  std::vector<json>
      images;  // every link first: a retry (a source not exported yet) adds nothing twice
  for (const v1::Node* c : chain) {
    const v1::Node* hint = NodeAt(In(*c, "hint"));
    if (!hint || hint->kind() != "ControlHint" || In(*hint, "image").empty() ||
        !In(*hint, "method").empty() || !In(*hint, "crop").empty() ||
        !In(*c, "guess_mode").empty() || !In(*c, "active").empty()) {
      Unsupported(c->name(),
                  "ControlNet other than ComfyUI's (a ControlHint of an image, default fit; no "
                  "guess_mode or active)");
      return cond;
    }
    SD_WIDGET(image, Link(*hint, "image"));
    images.push_back(image);
  }
  for (size_t k = 0; k < chain.size(); ++k) {
    const v1::Node& c = *chain[k];
    v1::ControlNetOptions o;
    if (c.has_options()) c.options().UnpackTo(&o);
    if (o.index() < 0 || o.index() >= static_cast<int>(options_.controlnets.size())) {
      return Error(absl::StrCat("node '", c.name(), "' runs ControlNet ", o.index(), " but ",
                                options_.controlnets.size(),
                                " ControlNet file name(s) are given for the workflow"));
    }
    SD_WIDGET(strength, Widget(c, "strength", 1.0));
    SD_WIDGET(start, Widget(c, "start", 0.0));
    SD_WIDGET(end, Widget(c, "end", 1.0));
    json& loader = control_loaders_[o.index()];
    if (loader.is_null())
      loader = Add("ControlNetLoader", {{"control_net_name", options_.controlnets[o.index()]}});
    cond = Add("ControlNetApplyAdvanced", {{"positive", cond},
                                           {"negative", cond},
                                           {"control_net", loader},
                                           {"image", images[k]},
                                           {"strength", strength},
                                           {"start_percent", start},
                                           {"end_percent", end}});
  }
  return cond;
}

absl::Status Exporter::Sampler(const v1::Node& end) {
  const auto [loop_name, carry_name] = Split(In(end, "latents"));
  auto lit = loops_.find(loop_name);
  const v1::Node* sched = NodeAt(In(end, "sigmas"));
  const v1::Loop* loop = lit == loops_.end() ? nullptr : lit->second;
  const v1::Node* start = nullptr;
  if (loop) {
    for (const v1::Carry& c : loop->carry()) {
      if (c.name() == carry_name) start = NodeAt(c.init());
    }
  }
  if (!loop || !sched || sched->kind() != "SigmaSchedule" || !start ||
      start->kind() != "SigmaStart") {
    Unsupported(end.name(), "SigmaEnd not after a SigmaSchedule/SigmaStart sampler loop");
    return absl::OkStatus();
  }
  std::map<std::string, const v1::Node*> body;
  const v1::Node *cfg = nullptr, *step = nullptr, *mask_in = nullptr, *step_noise = nullptr;
  for (const v1::Node& b : loop->node()) {
    body[b.name()] = &b;
    if (b.kind() == "CfgCombine")
      cfg = &b;
    else if (b.kind() == "SigmaStep")
      step = &b;
    else if (b.kind() == "NoiseMaskIn")
      mask_in = &b;
    else if (b.kind() == "Noise")
      step_noise = &b;
    else if (b.kind() != "UNetStep" && b.kind() != "NoiseMaskOut" && b.kind() != "ControlNet")
      Unsupported(b.name(), b.kind() + " in a sampler loop");
  }
  auto unet = [&](const std::string& port) -> const v1::Node* {
    auto it = cfg ? body.find(Split(In(*cfg, port)).first) : body.end();
    return it != body.end() && it->second->kind() == "UNetStep" ? it->second : nullptr;
  };
  const v1::Node *pos = unet("cond"), *neg = unet("uncond");
  if (!step || !pos || !neg) {
    Unsupported(loop->name(), "loop without UNetStep cond and uncond, CfgCombine and SigmaStep");
    return absl::OkStatus();
  }
  auto model = ModelOf(*pos);
  if (!model.ok()) return model.status();
  if (In(*pos, "model") != In(*neg, "model")) {
    Unsupported(loop->name(), "cond and uncond UNet steps with different models");
    return absl::OkStatus();
  }
  SD_WIDGET(positive_context, Link(*pos, "context"));
  SD_WIDGET(negative_context, Link(*neg, "context"));
  SD_WIDGET(positive, Controlled(*pos, positive_context, body));
  SD_WIDGET(negative, Controlled(*neg, negative_context, body));
  SD_WIDGET(latent, Link(*start, "latents"));
  if (mask_in && !inpaint_masks_.count(In(*mask_in, "mask"))) {
    SD_WIDGET(mask, Link(*mask_in, "mask"));
    latent = Add("SetLatentNoiseMask", {{"samples", latent}, {"mask", mask}});
  }
  const bool add_noise = !In(*start, "noise").empty();
  const v1::Node* noise = add_noise ? NodeAt(In(*start, "noise")) : step_noise;
  if (!noise || noise->kind() != "Noise") {
    Unsupported(start->name(), "SigmaStart whose noise is not a Noise node");
    return absl::OkStatus();
  }
  SD_WIDGET(seed, Widget(*noise, "seed"));
  SD_WIDGET(steps, Widget(*sched, "steps"));
  SD_WIDGET(scheduler, Widget(*sched, "scheduler", "normal"));
  SD_WIDGET(denoise, Widget(*sched, "denoise", 1.0));
  SD_WIDGET(sampler, Widget(*step, "sampler", "euler"));
  SD_WIDGET(scale, Widget(*cfg, "scale"));
  json inputs = {{"model", model->model},   {"positive", positive},  {"negative", negative},
                 {"latent_image", latent},  {"steps", steps},        {"cfg", scale},
                 {"sampler_name", sampler}, {"scheduler", scheduler}};
  const bool advanced = !add_noise || !In(*sched, "start").empty() || !In(*sched, "end").empty() ||
                        !In(*sched, "full_denoise").empty();
  if (advanced) {
    if (denoise != 1.0) {
      Unsupported(sched->name(), "SigmaSchedule with both denoise and a start/end range");
      return absl::OkStatus();
    }
    SD_WIDGET(first, Widget(*sched, "start", 0));
    SD_WIDGET(last, Widget(*sched, "end", 10000));
    SD_WIDGET(full, Widget(*sched, "full_denoise", 0));
    inputs["add_noise"] = add_noise ? "enable" : "disable";
    inputs["noise_seed"] = seed;
    inputs["start_at_step"] = first;
    inputs["end_at_step"] = last;
    inputs["return_with_leftover_noise"] = full == 0 ? "enable" : "disable";
  } else {
    inputs["seed"] = seed;
    inputs["denoise"] = denoise;
  }
  links_[end.name() + ".latents"] = Add(advanced ? "KSamplerAdvanced" : "KSampler", inputs);
  sampler_loops_.insert(loop->name());
  return absl::OkStatus();
}

absl::Status Exporter::Scale(const v1::Node& n) {
  const bool latent = n.kind() == "LatentUpscale";
  SD_WIDGET(from, Link(n, latent ? "latents" : "image"));
  SD_WIDGET(method, Widget(n, "method", "nearest-exact"));
  json inputs = {{latent ? "samples" : "image", from}, {"upscale_method", method}};
  std::string cls = latent ? "LatentUpscale" : "ImageScale";
  if (!In(n, "scale").empty()) {
    SD_WIDGET(scale, Widget(n, "scale"));
    inputs["scale_by"] = scale;
    cls += "By";
  } else {
    SD_WIDGET(w, Widget(n, "width", 0));
    SD_WIDGET(h, Widget(n, "height", 0));
    SD_WIDGET(crop, Widget(n, "crop", "disabled"));
    inputs["width"] = w;
    inputs["height"] = h;
    inputs["crop"] = crop;
  }
  links_[n.name() + (latent ? ".latents" : ".image")] = Add(cls, inputs);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> ExportComfyWorkflow(const v1::GraphConfig& graph,
                                                const std::string& file,
                                                const ComfyExportOptions& options) {
  return Exporter(graph, file, options).Run();
}

}  // namespace sd

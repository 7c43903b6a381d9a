#include "host_plugin/runtime/comfy_import.h"

#include <google/protobuf/text_format.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <optional>
#include <set>
#include <variant>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "nodes/schedulers/sigma_names.h"
#include "proto/sd/v1/graph.pb.h"
#include "proto/sd/v1/nodes.pb.h"

namespace sd {
namespace {

// What flows along a MODEL, CLIP or VAE link: which files, not tensors.
struct Handle {
  std::string checkpoint, vae, origin;  // origin: the loader's node id, for messages
  std::vector<std::pair<std::string, double>> loras;
  int64_t clip_skip = 1;
  bool operator==(const Handle& o) const {
    return checkpoint == o.checkpoint && vae == o.vae && loras == o.loras;
  }
};
using Slot = std::variant<Handle, std::string>;  // a handle, or a graph source "node.port"

// A ControlNet attached to a conditioning (ControlNetApply[Advanced]).
struct ControlUse {
  int index = 0;                     // in ComfyModel::controlnets
  std::string image;                 // graph source of the hint image ([1, 3, H, W] in [-1, 1])
  std::string strength, start, end;  // graph inputs ("$P..$" tokens)
};

struct Param {
  std::string base;
  std::string owner;  // the ComfyUI node id, for a suffix when values differ
  ComfyWidget value;
  std::string doc;
};

// A node id as our names allow it ('.', '=', '@' and spaces become '_').
std::string Safe(const std::string& id) {
  std::string s = id;
  for (char& c : s) {
    if (c == '.' || c == '=' || c == '@' || c == ' ') c = '_';
  }
  return s;
}

// Text for a comment of the graph file: a control character (a line break would end the comment
// and make the rest graph text) becomes a space.
std::string OneLine(const std::string& text) {
  std::string s = text;
  for (char& c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  }
  return s;
}

std::string Describe(const Handle& h) {
  std::string s = absl::StrCat("checkpoint '", h.checkpoint, "'");
  for (const auto& [name, w] : h.loras) absl::StrAppend(&s, " + LoRA '", name, "' at ", w);
  return s;
}

class Translator {
 public:
  Translator(const ComfyWorkflow& w, ComfyImportOptions o) : w_(w), options_(std::move(o)) {}

  absl::StatusOr<ComfyGraph> Run() {
    for (const std::string& id : w_.order) {
      if (absl::Status s = Translate(w_.node(id)); !s.ok()) return s;
    }
    ComfyGraph g;
    if (absl::Status s = ChooseModel(&g.model); !s.ok()) return s;
    g.text = Render(g.model);
    return g;
  }

 private:
  absl::Status Error(const ComfyNode& n, const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(
        "workflow ", w_.file, ": node ", n.id, " (", n.class_type,
        n.title.empty() || n.title == n.class_type ? "" : ", \"" + n.title + "\"", "): ", what));
  }
  const Slot& In(const ComfyNode& n, const std::string& port) const {
    const ComfyLink& l = n.links.at(port);
    return slots_.at({l.node, l.slot});
  }
  // Whether any needed node reads output `slot` of node `id`.
  bool Used(const std::string& id, int slot) const {
    for (const std::string& other : w_.order) {
      for (const auto& [port, l] : w_.node(other).links) {
        if (l.node == id && l.slot == slot) return true;
      }
    }
    return false;
  }
  // Hands what travels with the LATENT on input `port` (in `with`) on to this node's output.
  void Carry(const ComfyNode& n, const std::string& port,
             std::map<std::pair<std::string, int>, std::string>& with) {
    const ComfyLink& l = n.links.at(port);
    if (auto it = with.find({l.node, l.slot}); it != with.end()) with[{n.id, 0}] = it->second;
  }
  // The noise mask travelling with the LATENT on input `port` ("" for none).
  std::string MaskIn(const ComfyNode& n, const std::string& port) const {
    const ComfyLink& l = n.links.at(port);
    auto it = masks_.find({l.node, l.slot});
    return it == masks_.end() ? "" : it->second;
  }
  const Handle& HandleIn(const ComfyNode& n, const std::string& port) const {
    return std::get<Handle>(In(n, port));
  }
  std::string Source(const ComfyNode& n, const std::string& port) const {
    return std::get<std::string>(In(n, port));
  }

  // A graph input standing for a widget value; its final name is chosen once every value is known.
  std::string P(const std::string& base, const ComfyNode& n, ComfyWidget value,
                const std::string& doc) {
    params_.push_back({base, Safe(n.id), std::move(value), doc});
    return absl::StrCat("$P", params_.size() - 1, "$");
  }
  std::string W(const std::string& base, const ComfyNode& n, const std::string& widget,
                const std::string& doc) {
    return P(base, n, n.widgets.at(widget), doc);
  }

  v1::Node& Add(const std::string& kind, const std::string& name, std::vector<std::string> inputs,
                v1::Loop* loop = nullptr) {
    v1::Node* node = loop ? loop->add_node() : &blocks_.back().nodes.emplace_back();
    node->set_kind(kind);
    node->set_name(name);
    for (std::string& in : inputs) node->add_input(std::move(in));
    return *node;
  }
  void Begin(const ComfyNode& n) {
    Block b;
    b.comment = absl::StrCat("ComfyUI node ", n.id, ": ", n.class_type);
    if (!n.title.empty() && n.title != n.class_type)
      absl::StrAppend(&b.comment, " \"", n.title, "\"");
    blocks_.push_back(std::move(b));
  }

  absl::Status Translate(const ComfyNode& n) {
    const std::string& c = n.class_type;
    const std::string id = Safe(n.id);
    if (c == "CheckpointLoaderSimple") {
      Handle h;
      h.checkpoint = n.Text("ckpt_name");
      h.origin = id;
      for (int slot = 0; slot < 3; ++slot) slots_[{n.id, slot}] = h;
      return absl::OkStatus();
    }
    if (c == "VAELoader") {
      Handle h;
      h.vae = n.Text("vae_name");
      h.origin = id;
      slots_[{n.id, 0}] = h;
      return absl::OkStatus();
    }
    if (c == "LoraLoader" || c == "LoraLoaderModelOnly") {
      Handle model = HandleIn(n, "model");
      model.loras.emplace_back(n.Text("lora_name"), n.Number("strength_model"));
      slots_[{n.id, 0}] = model;
      if (c == "LoraLoader") {
        Handle clip = HandleIn(n, "clip");
        clip.loras.emplace_back(n.Text("lora_name"), n.Number("strength_clip"));
        slots_[{n.id, 1}] = clip;
      }
      return absl::OkStatus();
    }
    if (c == "CLIPSetLastLayer") {
      Handle clip = HandleIn(n, "clip");
      const int64_t stop = n.Int("stop_at_clip_layer");
      if (stop > -1 || stop < -24)
        return Error(n, absl::StrCat("stop_at_clip_layer ", stop, " is not in [-24, -1]"));
      clip.clip_skip = -stop;
      slots_[{n.id, 0}] = clip;
      return absl::OkStatus();
    }
    Begin(n);
    if (c == "CLIPTextEncode") return Encode(n);
    if (c == "EmptyLatentImage") {
      Add("EmptyLatent", id,
          {"width=" + W("width", n, "width", "pixels"),
           "height=" + W("height", n, "height", "pixels"),
           "batch=" + W("batch_size", n, "batch_size", "images drawn at once")});
      slots_[{n.id, 0}] = id + ".latents";
      return absl::OkStatus();
    }
    if (c == "RepeatLatentBatch" || c == "LatentFromBatch") return Batch(n);
    if (c == "KSampler" || c == "KSamplerAdvanced") return Sample(n);
    if (c == "VAEDecode" || c == "VAEEncode") {
      vae_users_.emplace_back(id, HandleIn(n, "vae"));
      const bool decode = c == "VAEDecode";
      Add(decode ? "VaeDecode" : "VaeEncode", id,
          {decode ? "latents=" + Source(n, "samples") : "image=" + Source(n, "pixels")});
      slots_[{n.id, 0}] = id + (decode ? ".image" : ".latents");
      return absl::OkStatus();
    }
    if (c == "LoadImage") {
      std::string path = n.Text("image");
      if (!options_.input_dir.empty() && !path.empty() && path[0] != '/')
        path = options_.input_dir + "/" + path;
      const std::string file = P("image", n, path, "an image file");
      Add("LoadImage", id + "_file", {"path=" + file});
      Add("ImageToTensor", id, {"pixels=" + id + "_file.pixels"});
      slots_[{n.id, 0}] = id + ".image";
      if (Used(n.id, 1)) {  // its MASK: 1 - alpha
        Add("LoadImageMask", id + "_mask", {"path=" + file});
        slots_[{n.id, 1}] = id + "_mask.mask";
      }
      return absl::OkStatus();
    }
    if (c == "LoadImageMask") {
      std::string path = n.Text("image");
      if (!options_.input_dir.empty() && !path.empty() && path[0] != '/')
        path = options_.input_dir + "/" + path;
      Add("LoadImageMask", id,
          {"path=" + P("mask_image", n, path, "an image file with the mask"),
           "channel=" + W("mask_channel", n, "channel", "alpha, red, green or blue")});
      slots_[{n.id, 0}] = id + ".mask";
      return absl::OkStatus();
    }
    if (c == "InvertMask") {
      Add("MaskInvert", id, {"mask=" + Source(n, "mask")});
      slots_[{n.id, 0}] = id + ".mask";
      return absl::OkStatus();
    }
    if (c == "SetLatentNoiseMask") {
      blocks_.back().comment += " (no node: the mask travels with the latents)";
      slots_[{n.id, 0}] = Source(n, "samples");
      masks_[{n.id, 0}] = Source(n, "mask");
      return absl::OkStatus();
    }
    if (c == "VAEEncodeForInpaint") {
      vae_users_.emplace_back(id, HandleIn(n, "vae"));
      Add("InpaintPrepare", id + "_prep",
          {"image=" + Source(n, "pixels"), "mask=" + Source(n, "mask"),
           "grow=" + W("grow_mask_by", n, "grow_mask_by", "pixels")});
      Add("VaeEncode", id, {"image=" + id + "_prep.image"});
      slots_[{n.id, 0}] = id + ".latents";
      masks_[{n.id, 0}] = id + "_prep.mask";
      return absl::OkStatus();
    }
    if (c == "SaveImage" || c == "PreviewImage") {
      Add("TensorToImages", id, {"image=" + Source(n, "images")});
      outputs_.emplace_back(outputs_.empty() ? "image" : "image_" + id, id + ".pixels");
      return absl::OkStatus();
    }
    if (c == "LatentUpscale" || c == "LatentUpscaleBy" || c == "ImageScale" || c == "ImageScaleBy")
      return Scale(n);
    if (c == "ControlNetLoader") {
      const std::string file = n.Text("control_net_name");
      auto it = std::find(control_files_.begin(), control_files_.end(), file);
      if (it == control_files_.end()) it = control_files_.insert(control_files_.end(), file);
      control_nets_[{n.id, 0}] = static_cast<int>(it - control_files_.begin());
      blocks_.back().comment += " (no node: the file joins the model reference)";
      slots_[{n.id, 0}] = std::string();
      return absl::OkStatus();
    }
    if (c == "ControlNetApply" || c == "ControlNetApplyAdvanced") return ApplyControl(n);
    if (c == "ImageInvert") {
      Add("ImageInvert", id, {"image=" + Source(n, "image")});
      slots_[{n.id, 0}] = id + ".image";
      return absl::OkStatus();
    }
    return Error(n, "has no translation");  // ComfyClassNames() and this function disagree
  }

  absl::Status ApplyControl(const ComfyNode& n) {
    const bool advanced = n.class_type == "ControlNetApplyAdvanced";
    blocks_.back().comment += " (no node: the sampler runs the ControlNet)";
    const ComfyLink& cn = n.links.at("control_net");
    ControlUse use;
    use.index = control_nets_.at({cn.node, cn.slot});
    use.image = Source(n, "image");
    use.strength = W("control_strength", n, "strength", "ControlNet strength");
    use.start = advanced
                    ? W("control_start", n, "start_percent", "ControlNet acts from this fraction")
                    : P("control_start", n, 0.0, "ControlNet acts from this fraction");
    use.end = advanced ? W("control_end", n, "end_percent", "ControlNet acts until this fraction")
                       : P("control_end", n, 1.0, "ControlNet acts until this fraction");
    int slot = 0;
    for (const char* port : advanced ? std::vector<const char*>{"positive", "negative"}
                                     : std::vector<const char*>{"conditioning"}) {
      const ComfyLink& l = n.links.at(port);
      slots_[{n.id, slot}] = Source(n, port);
      std::vector<ControlUse> uses = controls_[{l.node, l.slot}];
      uses.push_back(use);
      controls_[{n.id, slot}] = uses;
      ++slot;
    }
    return absl::OkStatus();
  }

  // The ControlNets on the conditioning `port` of sampler `n`, run in `loop` on `x`: the source of
  // their summed residuals ("" for none).
  std::string RunControls(const ComfyNode& n, const std::string& port, const std::string& half,
                          const std::string& x, const std::string& latent, v1::Loop& loop) {
    const ComfyLink& l = n.links.at(port);
    auto it = controls_.find({l.node, l.slot});
    if (it == controls_.end()) return "";
    const std::string id = Safe(n.id);
    std::string previous;
    for (size_t k = 0; k < it->second.size(); ++k) {
      const ControlUse& u = it->second[k];
      const std::string hint = absl::StrCat(id, "_", half, "_hint", k);
      Add("ControlHint", hint, {"image=" + u.image, "latents=" + latent});
      std::vector<std::string> in{"hint=" + hint + ".hint",
                                  x,
                                  "t=@loop.t",
                                  "context=" + Source(n, port),
                                  "strength=" + u.strength,
                                  "start=" + u.start,
                                  "end=" + u.end};
      if (!previous.empty()) in.push_back("residuals=" + previous);
      const std::string name = absl::StrCat(id, "_", half, "_control", k);
      v1::ControlNetOptions o;
      o.set_index(u.index);
      Add("ControlNet", name, in, &loop).mutable_options()->PackFrom(o);
      previous = name + ".residuals";
    }
    return previous;
  }

  absl::Status Encode(const ComfyNode& n) {
    const std::string id = Safe(n.id);
    const Handle& clip = HandleIn(n, "clip");
    clip_users_.emplace_back(id, clip);
    // "prompt" or "negative" by the samplers' use of it.
    std::set<std::string> roles;
    for (const std::string& other : w_.order) {
      for (const auto& [port, l] : w_.node(other).links) {
        if (l.node == n.id && (port == "positive" || port == "negative")) roles.insert(port);
      }
    }
    const std::string role = roles.size() != 1              ? "text"
                             : *roles.begin() == "positive" ? "prompt"
                                                            : "negative";
    Add("TokenizePrompt", id + "_tokens",
        {"text=" +
             W(role, n, "text", role == "negative" ? "what to steer away from" : "what to draw"),
         "weighting=@weighting"});
    Add("ClipEncode", id + "_clip",
        {"tokens=" + id + "_tokens.tokens", "vectors=" + id + "_tokens.vectors",
         "clip_skip=" +
             P("clip_skip", n, clip.clip_skip, "1: the last CLIP layer (CLIPSetLastLayer -1)")});
    Add("ApplyPromptWeights", id,
        {"context=" + id + "_clip.context", "weights=" + id + "_tokens.weights",
         "weighting=@weighting"});
    slots_[{n.id, 0}] = id + ".context";
    return absl::OkStatus();
  }

  absl::Status Sample(const ComfyNode& n) {
    const std::string id = Safe(n.id);
    const bool advanced = n.class_type == "KSamplerAdvanced";
    const auto samplers = SigmaSamplerNames(), schedulers = SigmaSchedulerNames();
    if (std::find(samplers.begin(), samplers.end(), n.Text("sampler_name")) == samplers.end()) {
      return Error(
          n, absl::StrCat("sampler_name '", n.Text("sampler_name"),
                          "' is not supported (supported: ", absl::StrJoin(samplers, ", "), ")"));
    }
    if (std::find(schedulers.begin(), schedulers.end(), n.Text("scheduler")) == schedulers.end()) {
      return Error(
          n, absl::StrCat("scheduler '", n.Text("scheduler"),
                          "' is not supported (supported: ", absl::StrJoin(schedulers, ", "), ")"));
    }
    model_users_.emplace_back(id, HandleIn(n, "model"));
    const std::string latent = Source(n, "latent_image");
    const std::string seed =
        W("seed", n, advanced ? "noise_seed" : "seed", "the noise seed, as ComfyUI draws it");
    std::vector<std::string> sched{"steps=" + W("steps", n, "steps", "sampler steps"),
                                   "scheduler=" + W("scheduler", n, "scheduler", "sigma spacing")};
    bool add_noise = true;
    if (advanced) {
      const std::string noise = n.Text("add_noise"),
                        leftover = n.Text("return_with_leftover_noise");
      for (const auto& [name, v] :
           {std::pair{"add_noise", noise}, {"return_with_leftover_noise", leftover}}) {
        if (v != "enable" && v != "disable")
          return Error(n, absl::StrCat(name, " '", v, "' is neither enable nor disable"));
      }
      add_noise = noise == "enable";
      sched.push_back("start=" + W("start_at_step", n, "start_at_step", "the first step to run"));
      sched.push_back("end=" + W("end_at_step", n, "end_at_step", "the step to stop at"));
      sched.push_back("full_denoise=" + P("full_denoise", n, int64_t{leftover == "enable" ? 0 : 1},
                                          "1: no leftover noise when ending early"));
    } else {
      sched.push_back("denoise=" + W("denoise", n, "denoise",
                                     "1: from pure noise; less: from the latent given"));
    }
    Add("SigmaSchedule", id + "_sigmas", sched);
    const std::string sigmas = "sigmas=" + id + "_sigmas.sigmas";
    std::vector<std::string> start{"latents=" + latent, sigmas};
    if (add_noise) {
      std::vector<std::string> noise{"seed=" + seed, "latents=" + latent};
      const ComfyLink& l = n.links.at("latent_image");
      if (auto it = batch_index_.find({l.node, l.slot}); it != batch_index_.end()) {
        noise.push_back("batch_index=" + it->second);  // a slice: its own elements' draws
      }
      Add("Noise", id + "_noise", noise);
      start.push_back("noise=" + id + "_noise.noise");
    }
    Add("SigmaStart", id + "_start", start);
    v1::Loop& loop = blocks_.back().loops.emplace_back();
    loop.set_name(id + "_loop");
    loop.set_timesteps(id + "_sigmas.timesteps");
    for (const char* carry : {"latents", "history"}) {
      v1::Carry* c = loop.add_carry();
      c->set_name(carry);
      c->set_init(id + "_start.latents");
      c->set_next(id + (std::string(carry) == "latents" ? "_step.latents" : "_step.denoised"));
    }
    const std::string x = "latents=@loop.latents";
    // With a noise mask the model sees the known region re-noised from the given latents, and its
    // estimate there is replaced by them (ComfyUI's KSamplerX0Inpaint).
    const std::string mask = MaskIn(n, "latent_image");
    std::string model_x = x;
    if (!mask.empty()) {
      std::vector<std::string> in{x, "original=" + latent, "mask=" + mask, sigmas,
                                  "index=@loop.index"};
      if (n.Text("sampler_name") == "ddim") {
        // ComfyUI's ddim re-noises the known region with noise of its own: the seed + 1 stream.
        v1::NoiseOptions o;
        o.set_seed_offset(1);
        Add("Noise", id + "_mask_noise", {"seed=" + seed, "latents=" + latent})
            .mutable_options()
            ->PackFrom(o);
        in.push_back("noise=" + id + "_mask_noise.noise");
      } else if (add_noise) {
        in.push_back("noise=" + id + "_noise.noise");
      }
      Add("NoiseMaskIn", id + "_masked", in, &loop);
      model_x = "latents=" + id + "_masked.latents";
    }
    // 9-channel inpainting checkpoints also take the mask and the given latents (ComfyUI's concat).
    std::vector<std::string> extra;
    if (!mask.empty()) extra = {"mask=" + id + "_masked.mask", "masked_latents=" + latent};
    auto unet = [&](const std::string& name, const std::string& context) {
      std::vector<std::string> in{model_x, "t=@loop.t", "context=" + Source(n, context)};
      in.insert(in.end(), extra.begin(), extra.end());
      const std::string control =
          RunControls(n, context, context == "positive" ? "cond" : "uncond", model_x, latent, loop);
      if (!control.empty()) in.push_back("control=" + control);
      Add("UNetStep", id + name, in, &loop);
    };
    unet("_cond", "positive");
    unet("_uncond", "negative");
    Add("CfgCombine", id + "_cfg",
        {"cond=" + id + "_cond.eps", "uncond=" + id + "_uncond.eps",
         "scale=" + W("cfg", n, "cfg", "guidance scale")},
        &loop);
    std::string eps = "eps=" + id + "_cfg.eps";
    if (!mask.empty()) {
      // The mask NoiseMaskIn resized to the latents: resized once a step, not twice.
      Add("NoiseMaskOut", id + "_unmasked",
          {x, "original=" + latent, "mask=" + id + "_masked.mask", sigmas, "index=@loop.index",
           "model_latents=" + id + "_masked.latents", eps},
          &loop);
      eps = "eps=" + id + "_unmasked.eps";
    }
    Add("Noise", id + "_step_noise", {"seed=" + seed, x, "index=@loop.index"}, &loop);
    Add("SigmaStep", id + "_step",
        {x, eps, sigmas, "index=@loop.index",
         "sampler=" +
             W("sampler", n, "sampler_name", "euler, euler_ancestral, dpmpp_2m, ddim or ddpm"),
         "noise=" + id + "_step_noise.noise", "history=@loop.history"},
        &loop);
    blocks_.back().after.emplace_back();
    v1::Node& end = blocks_.back().after.back();
    end.set_kind("SigmaEnd");
    end.set_name(id);
    end.add_input("latents=" + id + "_loop.latents");
    end.add_input(sigmas);
    slots_[{n.id, 0}] = id + ".latents";
    if (!mask.empty()) masks_[{n.id, 0}] = mask;
    Carry(n, "latent_image", batch_index_);
    return absl::OkStatus();
  }

  // A latent batch repeated or sliced; its noise mask goes along (it broadcasts over the batch),
  // and a slice remembers where it starts, for the noise ComfyUI draws for it (batch_index).
  absl::Status Batch(const ComfyNode& n) {
    const std::string id = Safe(n.id);
    const ComfyLink& in = n.links.at("samples");
    if (batch_index_.count({in.node, in.slot})) {
      return Error(n, "a batch of a LatentFromBatch slice is not supported yet");
    }
    if (n.class_type == "RepeatLatentBatch") {
      Add("BatchRepeat", id,
          {"tensor=" + Source(n, "samples"), "amount=" + W("amount", n, "amount", "copies")});
    } else {
      const std::string index =
          W("batch_index", n, "batch_index", "the first latent of the batch taken");
      Add("BatchSelect", id,
          {"tensor=" + Source(n, "samples"), "index=" + index,
           "length=" + W("length", n, "length", "how many latents taken")});
      batch_index_[{n.id, 0}] = index;
    }
    slots_[{n.id, 0}] = id + ".tensor";
    if (!MaskIn(n, "samples").empty()) masks_[{n.id, 0}] = MaskIn(n, "samples");
    return absl::OkStatus();
  }

  absl::Status Scale(const ComfyNode& n) {
    const std::string id = Safe(n.id);
    const bool latent = n.class_type.rfind("Latent", 0) == 0, by = n.class_type.back() == 'y';
    const std::string method = n.Text("upscale_method");
    if (method != "nearest-exact" && method != "bilinear" && method != "bicubic" &&
        method != "area") {
      return Error(
          n,
          absl::StrCat("upscale_method '", method,
                       "' is not supported (supported: nearest-exact, bilinear, bicubic, area)"));
    }
    std::vector<std::string> in{
        latent ? "latents=" + Source(n, "samples") : "image=" + Source(n, "image"),
        "method=" +
            W("upscale_method", n, "upscale_method", "nearest-exact, bilinear, bicubic, area")};
    if (by) {
      in.push_back("scale=" + W("scale_by", n, "scale_by", "the factor"));
    } else {
      in.push_back("width=" + W("upscale_width", n, "width", "pixels (0: keep the aspect ratio)"));
      in.push_back("height=" +
                   W("upscale_height", n, "height", "pixels (0: keep the aspect ratio)"));
      in.push_back("crop=" + W("crop", n, "crop", "disabled or center"));
    }
    Add(latent ? "LatentUpscale" : "ImageScale", id, in);
    if (latent && !MaskIn(n, "samples").empty()) masks_[{n.id, 0}] = MaskIn(n, "samples");
    if (latent) Carry(n, "samples", batch_index_);
    slots_[{n.id, 0}] = id + (latent ? ".latents" : ".image");
    return absl::OkStatus();
  }

  // One model for the run: every sampler's MODEL, every encoder's CLIP and every VAE user agree.
  absl::Status ChooseModel(ComfyModel* m) const;
  std::string Render(const ComfyModel& m) const;

  struct Block {
    std::string comment;
    std::vector<v1::Node> nodes;
    std::vector<v1::Loop> loops;
    std::vector<v1::Node> after;  // nodes after the loops (a sampler's end)
  };
  const ComfyWorkflow& w_;
  ComfyImportOptions options_;
  std::map<std::pair<std::string, int>, Slot> slots_;
  std::map<std::pair<std::string, int>, std::string> masks_;  // LATENT outputs' noise masks
  std::map<std::pair<std::string, int>, std::vector<ControlUse>>
      controls_;                                             // on CONDITIONING outputs
  std::map<std::pair<std::string, int>, int> control_nets_;  // CONTROL_NET outputs
  std::vector<std::string> control_files_;
  std::map<std::pair<std::string, int>, std::string>
      batch_index_;  // LATENT slices' first index (input)
  std::vector<Param> params_;
  std::vector<Block> blocks_;
  std::vector<std::pair<std::string, std::string>> outputs_;  // name, source
  std::vector<std::pair<std::string, Handle>> model_users_, clip_users_, vae_users_;
};

absl::Status Translator::ChooseModel(ComfyModel* m) const {
  auto agree = [&](const std::vector<std::pair<std::string, Handle>>& users,
                   const char* what) -> absl::Status {
    for (const auto& [id, h] : users) {
      if (!(h == users.front().second)) {
        return absl::InvalidArgumentError(
            absl::StrCat("workflow ", w_.file, ": node ", id, " uses a different ", what, " (",
                         Describe(h), ") than node ", users.front().first, " (",
                         Describe(users.front().second), "); one model per workflow is supported"));
      }
    }
    return absl::OkStatus();
  };
  for (const auto* users : {&model_users_, &clip_users_, &vae_users_}) {
    const char* what = users == &model_users_ ? "MODEL" : users == &clip_users_ ? "CLIP" : "VAE";
    if (absl::Status s = agree(*users, what); !s.ok()) return s;
  }
  if (model_users_.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("workflow ", w_.file, ": has no KSampler: nothing to compute with"));
  }
  const Handle& model = model_users_.front().second;
  m->checkpoint = model.checkpoint;
  if (!clip_users_.empty() && clip_users_.front().second.checkpoint != model.checkpoint) {
    return absl::InvalidArgumentError(
        absl::StrCat("workflow ", w_.file, ": the text encoder comes from checkpoint '",
                     clip_users_.front().second.checkpoint, "' but the UNet from '",
                     model.checkpoint, "'; one checkpoint per workflow is supported"));
  }
  if (!vae_users_.empty()) {
    const Handle& vae = vae_users_.front().second;
    if (vae.vae.empty() && vae.checkpoint != model.checkpoint) {
      return absl::InvalidArgumentError(
          absl::StrCat("workflow ", w_.file, ": the VAE comes from checkpoint '", vae.checkpoint,
                       "' but the UNet from '", model.checkpoint, "'"));
    }
    m->vae = vae.vae;
  }
  m->controlnets = control_files_;
  for (const auto& [name, w] : model.loras) m->loras.push_back({name, w, 0.0});
  if (!clip_users_.empty()) {
    for (const auto& lora : clip_users_.front().second.loras) {
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

std::string Translator::Render(const ComfyModel& m) const {
  // Names: equal values of one meaning share the plain name; differing ones get the node id.
  std::map<std::string, std::vector<size_t>> by_base;
  for (size_t i = 0; i < params_.size(); ++i) by_base[params_[i].base].push_back(i);
  std::vector<std::pair<std::string, std::string>> tokens;
  std::vector<v1::GraphInput> inputs;
  std::set<std::string> declared;
  for (size_t i = 0; i < params_.size(); ++i) {
    const Param& p = params_[i];
    const auto& group = by_base[p.base];
    const bool same = std::all_of(group.begin(), group.end(),
                                  [&](size_t j) { return params_[j].value == p.value; });
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
      "# Imported from the ComfyUI workflow ", OneLine(w_.file), " by sd-graph import-comfy.\n",
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
  for (const Block& b : blocks_) {
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
  for (const auto& [name, source] : outputs_) {
    absl::StrAppend(&out, "output { name: \"", name, "\" source: \"", source, "\" }\n");
  }
  return absl::StrReplaceAll(out, tokens);
}

}  // namespace

absl::StatusOr<ComfyGraph> TranslateComfyWorkflow(const ComfyWorkflow& workflow,
                                                  const ComfyImportOptions& options) {
  return Translator(workflow, options).Run();
}

bool IsComfyWorkflowFile(const std::string& path) {
  const size_t dot = path.rfind('.'), slash = path.rfind('/');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return false;
  std::string ext = path.substr(dot);
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return ext == ".json" || ext == ".png";
}

absl::StatusOr<ComfyGraph> ImportComfyWorkflow(const std::string& file,
                                               ComfyImportOptions options) {
  auto workflow = ReadComfyWorkflow(file);
  if (!workflow.ok()) return workflow.status();
  if (options.input_dir.empty()) {
    const size_t slash = file.rfind('/');
    options.input_dir = slash == std::string::npos ? "." : file.substr(0, slash);
  }
  return TranslateComfyWorkflow(*workflow, options);
}

}  // namespace sd

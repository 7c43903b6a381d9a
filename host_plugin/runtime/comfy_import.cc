#include "host_plugin/runtime/comfy_import.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <optional>
#include <set>
#include <variant>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "host_plugin/runtime/comfy_import_internal.h"
#include "nodes/schedulers/sigma_names.h"
#include "proto/sd/v1/graph.pb.h"
#include "proto/sd/v1/nodes.pb.h"

namespace sd {
namespace {

using comfy_import::Block;
using comfy_import::ChooseComfyModel;
using comfy_import::ComfyTranslation;
using comfy_import::Handle;
using comfy_import::Param;
using comfy_import::RenderComfyGraph;
using comfy_import::Safe;

using Slot = std::variant<Handle, std::string>;  // a handle, or a graph source "node.port"

// A ControlNet attached to a conditioning (ControlNetApply[Advanced]).
struct ControlUse {
  int index = 0;                     // in ComfyModel::controlnets
  std::string image;                 // graph source of the hint image ([1, 3, H, W] in [-1, 1])
  std::string strength, start, end;  // graph inputs ("$P..$" tokens)
};

class Translator {
 public:
  Translator(const ComfyWorkflow& w, ComfyImportOptions o) : w_(w), options_(std::move(o)) {}

  absl::StatusOr<ComfyGraph> Run() {
    for (const std::string& id : w_.order) {
      if (absl::Status s = Translate(w_.node(id)); !s.ok()) return s;
    }
    ComfyGraph g;
    if (absl::Status s = ChooseComfyModel(w_.file, options_, t_, &g.model); !s.ok()) return s;
    g.text = RenderComfyGraph(w_.file, t_, g.model);
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
    return comfy_import::AddParam(t_, base, Safe(n.id), std::move(value), doc);
  }
  std::string W(const std::string& base, const ComfyNode& n, const std::string& widget,
                const std::string& doc) {
    return P(base, n, n.widgets.at(widget), doc);
  }

  v1::Node& Add(const std::string& kind, const std::string& name, std::vector<std::string> inputs,
                v1::Loop* loop = nullptr) {
    v1::Node* node = loop ? loop->add_node() : &t_.blocks.back().nodes.emplace_back();
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
    t_.blocks.push_back(std::move(b));
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
      model.loras.push_back({n.Text("lora_name"), n.Number("strength_model"), n.id});
      slots_[{n.id, 0}] = model;
      if (c == "LoraLoader") {
        Handle clip = HandleIn(n, "clip");
        clip.loras.push_back({n.Text("lora_name"), n.Number("strength_clip"), n.id});
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
      t_.vae_users.emplace_back(id, HandleIn(n, "vae"));
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
      t_.blocks.back().comment += " (no node: the mask travels with the latents)";
      slots_[{n.id, 0}] = Source(n, "samples");
      masks_[{n.id, 0}] = Source(n, "mask");
      return absl::OkStatus();
    }
    if (c == "VAEEncodeForInpaint") {
      t_.vae_users.emplace_back(id, HandleIn(n, "vae"));
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
      t_.outputs.emplace_back(t_.outputs.empty() ? "image" : "image_" + id, id + ".pixels");
      return absl::OkStatus();
    }
    if (c == "LatentUpscale" || c == "LatentUpscaleBy" || c == "ImageScale" || c == "ImageScaleBy")
      return Scale(n);
    if (c == "ControlNetLoader") {
      const std::string file = n.Text("control_net_name");
      auto it = std::find(t_.control_files.begin(), t_.control_files.end(), file);
      if (it == t_.control_files.end()) it = t_.control_files.insert(t_.control_files.end(), file);
      control_nets_[{n.id, 0}] = static_cast<int>(it - t_.control_files.begin());
      t_.blocks.back().comment += " (no node: the file joins the model reference)";
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
    t_.blocks.back().comment += " (no node: the sampler runs the ControlNet)";
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
    t_.clip_users.emplace_back(id, clip);
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
    t_.model_users.emplace_back(id, HandleIn(n, "model"));
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
    v1::Loop& loop = t_.blocks.back().loops.emplace_back();
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
    t_.blocks.back().after.emplace_back();
    v1::Node& end = t_.blocks.back().after.back();
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

  const ComfyWorkflow& w_;
  ComfyImportOptions options_;
  std::map<std::pair<std::string, int>, Slot> slots_;
  std::map<std::pair<std::string, int>, std::string> masks_;  // LATENT outputs' noise masks
  std::map<std::pair<std::string, int>, std::vector<ControlUse>>
      controls_;                                             // on CONDITIONING outputs
  std::map<std::pair<std::string, int>, int> control_nets_;  // CONTROL_NET outputs
  std::map<std::pair<std::string, int>, std::string>
      batch_index_;  // LATENT slices' first index (input)
  ComfyTranslation t_;  // what Run renders
};

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

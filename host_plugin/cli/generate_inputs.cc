#include "host_plugin/cli/generate_inputs.h"

#include <torch/torch.h>

#include <cmath>
#include <cstdio>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "host_plugin/cli/controlnet_flags.h"
#include "host_plugin/cli/image_io.h"
#include "nodes/ops/image_resize.h"
#include "nodes/schedulers/samplers.h"
#include "nodes/text/prompt_parser.h"

namespace sd::cli {
namespace {

// img2img and inpaint: the init image (and the mask) into `inputs`, resized to --width x --height
// when given (the reference resizes its input to the working size too, with PIL; ResizePixels is
// antialiased bicubic, close to but not bit-equal with PIL's). kExitOk, or the exit code after
// saying why.
int ReadInitAndMask(Mode mode, const std::string& name, const Args& args,
                    std::map<std::string, Value>* inputs) {
  if (mode != Mode::kImg2Img && mode != Mode::kInpaint) return kExitOk;
  auto usage = [&](const std::string& msg) { return UsageError(name, msg); };
  if (!args.Get("init")) return usage("--init IMG is required");
  auto px = ReadImageRgb8(*args.Get("init"));
  if (!px.ok()) return FailWithCode(name, px.status());
  // --width/--height: the size to work at. The reference resizes its input to the working size;
  // so do we when they differ (ResizePixels, the GEGL operations' resizer too).
  int64_t want_w = px->size(1), want_h = px->size(0);
  for (auto [flag, target] :
       {std::pair<const char*, int64_t*>{"width", &want_w}, {"height", &want_h}}) {
    if (auto v = args.Get(flag);
        v && (!absl::SimpleAtoi(*v, target) || *target <= 0 || *target % 64 != 0)) {
      return usage(absl::StrCat("--", flag, " ", *v, ": SD v1.x needs a positive multiple of 64"));
    }
  }
  const bool resize = want_w != px->size(1) || want_h != px->size(0);
  if (resize) {
    std::fprintf(stderr, "sd-graph %s: resizing the init image from %lldx%lld to %lldx%lld\n",
                 name.c_str(), static_cast<long long>(px->size(1)),
                 static_cast<long long>(px->size(0)), static_cast<long long>(want_w),
                 static_cast<long long>(want_h));
    px = ResizePixels(*px, want_w, want_h);
    if (!px.ok()) return FailWithCode(name, px.status());
  }
  if (px->size(0) % 64 || px->size(1) % 64) {
    return usage(absl::StrCat(
        "the init image is ", px->size(1), "x", px->size(0),
        "; SD v1.x needs width and height that are multiples of 64 (resize or crop it)"));
  }
  (*inputs)["init"] = *px;
  if (mode == Mode::kInpaint) {
    if (!args.Get("mask")) return usage("--mask MASK is required");
    auto mask = ReadImageRgb8(*args.Get("mask"));
    if (!mask.ok()) return FailWithCode(name, mask.status());
    if (resize && mask->size(0) * want_w == mask->size(1) * want_h)
      mask = ResizePixels(*mask, want_w, want_h);
    if (!mask.ok()) return FailWithCode(name, mask.status());
    if (mask->sizes() != px->sizes()) {
      return usage(absl::StrCat("the mask is ", mask->size(1), "x", mask->size(0),
                                " but the image is ", px->size(1), "x", px->size(0),
                                "; they must be the same size"));
    }
    (*inputs)["mask"] = *mask;
  }
  return kExitOk;
}

// txt2img, img2img, inpaint: the shortcut flags onto the inputs the graph has, checked.
int SetShortcutInputs(const Invocation& inv, const Graph& graph, GraphInputs* in) {
  const Args& args = inv.args;
  auto usage = [&](const std::string& msg) { return UsageError(inv.name, msg); };
  auto set = [&](const std::string& key, const std::string& text) -> int {
    auto v = graph.ParseInputValue(key, text);
    if (!v.ok()) return usage(std::string(v.status().message()));
    in->values[key] = *v;
    return kExitOk;
  };
  for (const auto& [flag, input] : {std::pair<const char*, const char*>{"prompt", "prompt"},
                                    {"negative", "negative"},
                                    {"steps", "steps"},
                                    {"cfg", "cfg"},
                                    {"width", "width"},
                                    {"height", "height"},
                                    {"strength", "strength"},
                                    {"eta", "eta"},
                                    {"clip-skip", "clip_skip"},
                                    {"weighting", "weighting"},
                                    {"hires-scale", "hires_scale"},
                                    {"hires-denoise", "hires_denoise"},
                                    {"hires-steps", "hires_steps"},
                                    {"hires-upscaler", "upscale_method"}}) {
    if (auto v = args.Get(flag); v && graph.Input(input)) {
      if (int c = set(input, *v); c != kExitOk) return c;
    }
  }
  // The second pass runs as many steps as the first unless told.
  if (graph.Input("hires_steps") && !args.Get("hires-steps")) {
    if (int c = set("hires_steps", args.GetOr("steps", "50")); c != kExitOk) return c;
  }
  if (int64_t skip = 0;
      args.Get("clip-skip") && (!absl::SimpleAtoi(*args.Get("clip-skip"), &skip) || skip < 1)) {
    return usage("--clip-skip must be a positive integer (1: the last layer)");
  }
  if (auto v = args.Get("weighting"); v && !ParsePromptWeighting(*v).ok())
    return usage(std::string(ParsePromptWeighting(*v).status().message()));
  if (auto v = args.Get("batch");
      v && (!absl::SimpleAtoi(*v, &in->batch) || in->batch < 1 || in->batch > 10000)) {
    return usage("--batch must be an integer from 1 to 10000");
  }
  SamplerSpec sampler;
  sampler.name = absl::AsciiStrToLower(args.GetOr("sampler", "ddpm"));
  sampler.karras = args.Has("karras");
  if (absl::Status s = CheckSamplerSpec(sampler); !s.ok()) return usage(std::string(s.message()));
  in->values["sampler"] = sampler.name;
  in->values["karras"] = int64_t{sampler.karras ? 1 : 0};
  if (!args.Get("prompt")) return usage("--prompt is required");
  return kExitOk;
}

// --set NAME=VALUE, after everything else ("{frame}" is 0 here; farm frames set their own).
int ApplySets(const Invocation& inv, const Graph& graph, GraphInputs* in) {
  for (const std::string& kv : inv.sets) {
    const size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0)
      return UsageError(inv.name, absl::StrCat("--set '", kv, "' is not NAME=VALUE"));
    auto v = graph.ParseInputValue(kv.substr(0, eq), ReplaceAll(kv.substr(eq + 1), "{frame}", "0"));
    if (!v.ok()) return UsageError(inv.name, std::string(v.status().message()));
    in->values[kv.substr(0, eq)] = *v;
  }
  return kExitOk;
}

// One side of the image: positive, a multiple of 64, and still one after --hires-scale.
int CheckSide(const Invocation& inv, const char* dim, int64_t v, const GraphInputs& in) {
  if (auto scale = in.values.find("hires_scale");
      scale != in.values.end() && v > 0 && v % 64 == 0) {
    const double f = std::get<double>(scale->second);
    const int64_t out = static_cast<int64_t>(std::nearbyint(v / 8 * f)) * 8;
    if (!(f >= 1 && f <= 8) || out % 64 != 0) {
      return UsageError(
          inv.name,
          absl::StrCat("--hires-scale ", f, ": ", dim, " ", v, " would become ", out,
                       "; the scale must be 1 to 8 and give a multiple of 64 (e.g. 1.5 or 2)"));
    }
  }
  if (v <= 0 || v % 64 != 0) {
    return UsageError(inv.name, absl::StrCat("--", dim, " ", v,
                                             ": SD v1.x needs a positive multiple of 64 (the VAE "
                                             "divides by 8 and the UNet halves three more times)"));
  }
  return kExitOk;
}

}  // namespace

int SetGraphInputs(const Invocation& inv, const Graph& graph, GraphInputs* in) {
  in->seed_given = inv.args.Get("seed").has_value();
  if (auto v = inv.args.Get("seed"); v && !absl::SimpleAtoi(*v, &in->seed))
    return UsageError(inv.name, "--seed must be an integer");
  if (inv.mode != Mode::kRun) {
    if (int c = SetShortcutInputs(inv, graph, in); c != kExitOk) return c;
  }
  if (int c = ReadInitAndMask(inv.mode, inv.name, inv.args, &in->values); c != kExitOk) return c;
  if (absl::Status s = SetControlNetInputs(inv.control, graph, &in->values); !s.ok())
    return FailWithCode(inv.name, s);
  return ApplySets(inv, graph, in);
}

int SetImageSize(const Invocation& inv, const Graph& graph, int native, GraphInputs* in) {
  if (inv.comfy) return kExitOk;
  for (const char* dim : {"width", "height"}) {
    if (native > 0 && graph.Input(dim) && !in->values.count(dim)) in->values[dim] = int64_t{native};
  }
  for (const char* dim : {"width", "height"}) {
    auto it = in->values.find(dim);
    const v1::GraphInput* input = graph.Input(dim);
    const int64_t v = it != in->values.end() && std::holds_alternative<int64_t>(it->second)
                          ? std::get<int64_t>(it->second)
                      : input && input->default_value().kind_case() == v1::Value::kI
                          ? input->default_value().i()
                          : 64;
    if (int c = CheckSide(inv, dim, v, *in); c != kExitOk) return c;
  }
  return kExitOk;
}

}  // namespace sd::cli

#include "host_plugin/cli/generate_invocation.h"

#include <cstdio>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "host_plugin/cli/common.h"
#include "host_plugin/cli/generate_help.h"
#include "host_plugin/runtime/comfy_import.h"
#include "nodes/weights/demo_model.h"

namespace sd::cli {
namespace {

FlagSpec SpecFor(Mode mode) {
  FlagSpec spec{{"model",          "tokenizer",    "dtype",
                 "threads",        "output",       "o",
                 "dump",           "stats",        "set",
                 "frames",         "seed",         "workers",
                 "parallel",       "token-file",   "tls-ca",
                 "tls-cert",       "tls-key",      "tls-server-name",
                 "wire-dtype",     "call-timeout", "max-attempts",
                 "max-message-mb", "embeddings",   "vae",
                 "lora-dir",       "comfy-models", "input-dir",
                 "hint-pass",      "canny-low",    "canny-high",
                 "placement",      "loop-workers", "cfg-batch"},
                {"overwrite", "require-tls", "strict-lora", "guess-mode", "control-cond-only"}};
  if (mode != Mode::kRun) {
    for (const char* f : {"prompt", "negative", "steps", "cfg", "sampler", "batch", "eta",
                          "clip-skip", "weighting", "width", "height"})
      spec.with_value.insert(f);
    spec.switches.insert("karras");
  }
  if (mode == Mode::kTxt2Img)
    spec.with_value.insert({"hires-scale", "hires-denoise", "hires-steps", "hires-upscaler"});
  if (mode == Mode::kImg2Img) spec.with_value.insert({"init", "strength"});
  if (mode == Mode::kInpaint) spec.with_value.insert({"init", "mask", "strength"});
  return spec;
}

// Collects the repeatable flags (--set, --dump, --lora, the ControlNet ones) into *inv and returns
// the other arguments, for Args.
std::vector<std::string> TakeRepeatable(const std::vector<std::string>& argv, Invocation* inv) {
  std::vector<std::string> repeatable = {"--set", "--dump", "--lora"};
  for (const std::string& f : ControlNetRepeatableFlags()) repeatable.push_back(f);
  auto list_of = [&](const std::string& flag) -> std::vector<std::string>& {
    if (std::vector<std::string>* list = ControlNetFlagList(inv->control, flag)) return *list;
    return flag == "--set" ? inv->sets : flag == "--dump" ? inv->dumps : inv->loras;
  };
  std::vector<std::string> rest;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    bool taken = false;
    for (const std::string& flag : repeatable) {
      if (a == flag && i + 1 < argv.size()) {
        list_of(flag).push_back(argv[++i]);
      } else if (a.rfind(flag + "=", 0) == 0) {
        list_of(flag).push_back(a.substr(flag.size() + 1));
      } else {
        continue;
      }
      taken = true;
      break;
    }
    if (!taken) rest.push_back(a);
  }
  return rest;
}

// `run WORKFLOW.json`: the workflow brings its graph and names its model files.
int PrepareComfy(Invocation* inv) {
  const Args& args = inv->args;
  if (inv->mode == Mode::kRun && args.positionals().size() == 1 &&
      IsComfyWorkflowFile(args.positionals()[0])) {
    auto prepared = PrepareComfyRun(args.positionals()[0], args);
    if (!prepared.ok()) return FailWithCode(inv->name, prepared.status());
    inv->comfy = *std::move(prepared);
    if (inv->model.empty()) inv->model = inv->comfy->model;
    inv->loras.insert(inv->loras.begin(), inv->comfy->loras.begin(), inv->comfy->loras.end());
    return kExitOk;
  }
  for (const char* f : {"comfy-models", "input-dir"}) {
    if (args.Has(f))
      return UsageError(inv->name,
                        absl::StrCat("--", f, " applies to ComfyUI workflows (run WORKFLOW.json)"));
  }
  return kExitOk;
}

int ParseControlNetFlags(Invocation* inv) {
  const Args& args = inv->args;
  auto usage = [&](const std::string& msg) { return UsageError(inv->name, msg); };
  ControlNetFlags& control = inv->control;
  control.pass = args.GetOr("hint-pass", "image");
  for (const auto& [flag, value] :
       {std::pair{"canny-low", &control.canny_low}, {"canny-high", &control.canny_high}}) {
    if (auto v = args.Get(flag); v && !absl::SimpleAtoi(*v, value))
      return usage(absl::StrCat("--", flag, " ", *v, ": expected an integer"));
  }
  control.guess_mode = args.Has("guess-mode");
  control.cond_only = args.Has("control-cond-only");
  if (absl::Status s = CheckControlNetFlags(control); !s.ok())
    return usage(std::string(s.message()));
  if (!control.files.empty() &&
      (inv->mode == Mode::kInpaint || args.Has("hires-scale") || inv->comfy)) {
    return usage(
        "--controlnet applies to txt2img, img2img and graph files (not to inpaint, --hires-scale "
        "or ComfyUI workflows, which name their own ControlNets)");
  }
  return kExitOk;
}

}  // namespace

std::string Invocation::Prompt() const {
  std::string prompt = args.GetOr("prompt", "");
  for (const std::string& kv : sets) {
    if (kv.rfind("prompt=", 0) == 0) prompt = kv.substr(7);
  }
  return prompt;
}

std::optional<int> ParseInvocation(Mode mode, const std::vector<std::string>& argv,
                                   Invocation* inv) {
  inv->mode = mode;
  inv->name = ModeName(mode);
  const std::string help = GenerateHelp(mode);
  int code = kExitOk;
  auto args =
      ParseCommandLine(inv->name, TakeRepeatable(argv, inv), SpecFor(mode), help.c_str(), &code);
  if (!args) return code;  // --help (0) or a bad flag
  inv->args = *std::move(args);
  inv->model = inv->args.GetOr("model", "");
  if (int c = PrepareComfy(inv); c != kExitOk) return c;
  if (int c = ParseControlNetFlags(inv); c != kExitOk) return c;
  inv->out = OutputFlag(inv->args);
  if (inv->out.empty()) return UsageError(inv->name, "-o OUT is required");
  if (inv->model.empty()) {
    // Workers look the demo model up by name in their repositories (the worker images ship it).
    // Inpainting runs its inpainting variant (9 channels) where that is installed.
    inv->model = DefaultModel(inv->args.Has("workers"), "", mode == Mode::kInpaint);
    if (inv->model.empty()) {
      return UsageError(inv->name,
                        absl::StrCat("--model is required: the demo model (", kDemoModelFile,
                                     ") is not installed; name an SD v1.x .safetensors "
                                     "or .ckpt"));
    }
    const bool inpainting_variant = absl::EndsWith(inv->model, kDemoInpaintModelFile);
    std::fprintf(stderr,
                 "sd-graph %s: no --model given: using the demo %smodel %s (trained by this "
                 "project on drawn shapes; not Stable Diffusion)\n",
                 inv->name.c_str(), inpainting_variant ? "inpainting " : "", inv->model.c_str());
  }
  return std::nullopt;
}

}  // namespace sd::cli

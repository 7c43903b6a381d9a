// sd-graph run / txt2img / img2img: run a graph file (the shortcuts run the stock graphs)
// in-process and write the image, with its generation parameters in the file (PNG "parameters"
// text, as other SD tools).
#include <torch/torch.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <climits>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "host_plugin/cli/comfy_run.h"
#include "host_plugin/cli/commands.h"
#include "host_plugin/cli/common.h"
#include "host_plugin/cli/controlnet_flags.h"
#include "host_plugin/cli/generate_help.h"
#include "host_plugin/cli/generate_util.h"
#include "host_plugin/cli/image_io.h"
#include "host_plugin/cli/render_jobs.h"
#include "host_plugin/runtime/comfy_import.h"
#include "host_plugin/runtime/control_graph.h"
#include "host_plugin/runtime/graph.h"
#include "host_plugin/runtime/stock_graphs.h"
#ifdef SD_HAVE_GRPC
#include "host_plugin/runtime/worker_pool.h"
#else
namespace sd {  // built without gRPC: --workers is refused, these stand in for the types
struct ModelInfo {
  std::string sha256;
  int unet_in_channels = 4;
  int native_size = 0;
};
class WorkerPool : public NodeDispatcher {
 public:
  size_t size() const { return 0; }
};
}  // namespace sd
#endif
#include "host_plugin/runtime/model_flags.h"
#include "nodes/base/file_util.h"
#include "nodes/base/runtime_info.h"
#include "nodes/base/status_macros.h"
#include "nodes/ops/model_cache.h"
#include "nodes/schedulers/samplers.h"
#include "nodes/tensor/wire.h"
#include "nodes/text/prompt_parser.h"
#include "nodes/weights/checkpoint.h"
#include "nodes/weights/demo_model.h"
#include "nodes/weights/model_ref.h"
#include "nodes/weights/safetensors.h"
#include "nodes/weights/sd_config.h"
#include "nodes/weights/torch_tensors.h"

namespace sd::cli {
namespace {

std::string StockGraph(const std::string& name) { return StockGraphPath(name, DirOfExecutable()); }

std::atomic<bool> g_cancel{false};  // set by SIGTERM / SIGINT; passed to each run as
                                    // RunOptions::cancelled

extern "C" void OnTerminate(int) { g_cancel.store(true); }

// The native size a local checkpoint declares; 0 when it declares none or cannot be opened (the run
// reports that soon enough). Opened through the run's model cache, which keeps the entry for the
// run.
int LocalNativeSize(ModelCache& models, const std::string& path) {
  auto entry = models.Open(path);
  return entry.ok() ? NativeSize((*entry)->checkpoint->metadata()).value_or(0) : 0;
}

// img2img and inpaint: the init image (and the mask) into `inputs`, resized to --width x --height
// when given (the reference resizes its input to the working size too; the resampling filter
// differs from PIL's, so pixels may differ slightly then). kExitOk, or the exit code after saying
// why.
int ReadInitAndMask(Mode mode, const std::string& name, const Args& args,
                    std::map<std::string, Value>* inputs) {
  if (mode != Mode::kImg2Img && mode != Mode::kInpaint) return kExitOk;
  auto usage = [&](const std::string& msg) { return UsageError(name, msg); };
  if (!args.Get("init")) return usage("--init IMG is required");
  auto px = ReadImageRgb8(*args.Get("init"));
  if (!px.ok()) return FailWithCode(name, px.status());
  // --width/--height: the size to work at. The reference resizes its input to the working size;
  // so do we when they differ (the resampling filter differs from PIL's, so pixels may differ
  // slightly then).
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
    px = ResizeRgb8(*px, want_w, want_h);
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
      mask = ResizeRgb8(*mask, want_w, want_h);
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

// Distributed runs: connects to --workers and asks them for the model (they report its hash and
// shape). Without --workers, refuses the flags that only apply to them. kExitOk, or the exit code
// after saying why.
int ConnectWorkers(const std::string& name, const Args& args, const std::string& model_name,
                   std::unique_ptr<WorkerPool>* pool, std::optional<ModelInfo>* remote_model) {
  auto usage = [&](const std::string& msg) { return UsageError(name, msg); };
  if (args.Has("workers")) {
#ifdef SD_HAVE_GRPC
    auto targets = WorkerPool::ParseTargets(*args.Get("workers"));
    if (!targets.ok()) return usage(std::string(targets.status().message()));
    WorkerPoolOptions po;
    po.targets = *targets;
    po.tls_ca = args.GetOr("tls-ca", "");
    po.tls_cert = args.GetOr("tls-cert", "");
    po.tls_key = args.GetOr("tls-key", "");
    po.tls_server_name = args.GetOr("tls-server-name", "");
    po.require_tls = args.Has("require-tls");
    auto token = ReadToken(args.GetOr("token-file", ""));
    if (!token.ok()) return usage(std::string(token.status().message()));
    po.token = *token;
    if (auto w = args.Get("wire-dtype")) {
      auto d = ParseWireDType(*w);
      if (!d.ok()) return usage(std::string(d.status().message()));
      po.wire = *d;
    }
    if (auto t = args.Get("call-timeout");
        t && (!absl::SimpleAtod(*t, &po.call_timeout_s) || po.call_timeout_s <= 0)) {
      return usage("--call-timeout must be a positive number of seconds");
    }
    if (auto t = args.Get("max-attempts");
        t && (!absl::SimpleAtoi(*t, &po.max_attempts) || po.max_attempts < 1)) {
      return usage("--max-attempts must be a positive integer");
    }
    if (auto t = args.Get("max-message-mb");
        t && (!absl::SimpleAtoi(*t, &po.max_message_mb) || po.max_message_mb < 1 ||
              po.max_message_mb > 2000)) {
      return usage("--max-message-mb must be an integer from 1 to 2000");
    }
    auto created = WorkerPool::Create(po);
    if (!created.ok()) return FailWithCode(name, created.status());
    *pool = *std::move(created);
    auto info = (*pool)->Prepare(model_name);
    if (!info.ok()) return FailWithCode(name, info.status());
    *remote_model = *info;
#else
    (void)model_name, (void)pool, (void)remote_model;
    return usage("--workers: this sd-graph was built without gRPC (SD_WITH_GRPC=OFF)");
#endif
  } else {
    for (const char* f :
         {"parallel", "token-file", "tls-ca", "tls-cert", "tls-key", "tls-server-name",
          "wire-dtype", "call-timeout", "max-attempts", "max-message-mb", "require-tls"}) {
      if (args.Has(f))
        return usage(absl::StrCat("--", f, " applies to distributed runs (--workers)"));
    }
  }
  return kExitOk;
}

int Generate(Mode mode, const std::vector<std::string>& argv) {
  const std::string name = ModeName(mode);
  const std::string help = GenerateHelp(mode);
  FlagSpec spec{{"model",          "tokenizer",    "dtype",
                 "threads",        "output",       "o",
                 "dump",           "stats",        "set",
                 "frames",         "seed",         "workers",
                 "parallel",       "token-file",   "tls-ca",
                 "tls-cert",       "tls-key",      "tls-server-name",
                 "wire-dtype",     "call-timeout", "max-attempts",
                 "max-message-mb", "embeddings",   "vae",
                 "lora-dir",       "comfy-models", "input-dir"},
                {"overwrite", "require-tls", "strict-lora"}};
  if (mode != Mode::kRun) {
    for (const char* f : {"prompt", "negative", "steps", "cfg", "sampler", "batch", "eta",
                          "clip-skip", "weighting"})
      spec.with_value.insert(f);
    spec.switches.insert("karras");
  }
  if (mode != Mode::kRun) spec.with_value.insert({"width", "height"});
  if (mode == Mode::kTxt2Img)
    spec.with_value.insert({"hires-scale", "hires-denoise", "hires-steps", "hires-upscaler"});
  spec.with_value.insert({"hint-pass", "canny-low", "canny-high"});
  spec.switches.insert({"guess-mode", "control-cond-only"});
  if (mode == Mode::kImg2Img) spec.with_value.insert({"init", "strength"});
  if (mode == Mode::kInpaint) spec.with_value.insert({"init", "mask", "strength"});
  // Repeatable flags (--set, --dump) are collected by hand; everything else goes through Args.
  std::vector<std::string> rest, sets, dumps, loras;
  ControlNetFlags control;
  std::vector<std::string> repeatable = {"--set", "--dump", "--lora"};
  for (const std::string& f : ControlNetRepeatableFlags()) repeatable.push_back(f);
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    for (const std::string& flag : repeatable) {
      std::vector<std::string>* list = ControlNetFlagList(control, flag);
      std::vector<std::string>& into = list               ? *list
                                       : flag == "--set"  ? sets
                                       : flag == "--dump" ? dumps
                                                          : loras;
      if (a == flag && i + 1 < argv.size()) {
        into.push_back(argv[++i]);
        goto next;
      }
      if (a.rfind(flag + "=", 0) == 0) {
        into.push_back(a.substr(flag.size() + 1));
        goto next;
      }
    }
    rest.push_back(a);
  next:;
  }
  int code = kExitOk;
  auto args = ParseCommandLine(name, rest, spec, help.c_str(), &code);
  if (!args) return code;
  auto usage = [&](const std::string& msg) { return UsageError(name, msg); };
  std::string model = args->GetOr("model", "");
  // A ComfyUI workflow brings its graph and names its model files.
  std::optional<ComfyRun> comfy;
  if (mode == Mode::kRun && args->positionals().size() == 1 &&
      IsComfyWorkflowFile(args->positionals()[0])) {
    auto prepared = PrepareComfyRun(args->positionals()[0], *args);
    if (!prepared.ok()) return FailWithCode(name, prepared.status());
    comfy = *std::move(prepared);
    if (model.empty()) model = comfy->model;
    loras.insert(loras.begin(), comfy->loras.begin(), comfy->loras.end());
  } else {
    for (const char* f : {"comfy-models", "input-dir"}) {
      if (args->Has(f))
        return UsageError(
            name, absl::StrCat("--", f, " applies to ComfyUI workflows (run WORKFLOW.json)"));
    }
  }
  control.pass = args->GetOr("hint-pass", "image");
  for (const auto& [flag, value] :
       {std::pair{"canny-low", &control.canny_low}, {"canny-high", &control.canny_high}}) {
    if (auto v = args->Get(flag); v && !absl::SimpleAtoi(*v, value))
      return usage(absl::StrCat("--", flag, " ", *v, ": expected an integer"));
  }
  control.guess_mode = args->Has("guess-mode");
  control.cond_only = args->Has("control-cond-only");
  if (absl::Status s = CheckControlNetFlags(control); !s.ok())
    return usage(std::string(s.message()));
  if (!control.files.empty() && (mode == Mode::kInpaint || args->Has("hires-scale") || comfy)) {
    return usage(
        "--controlnet applies to txt2img, img2img and graph files (not to inpaint, --hires-scale "
        "or "
        "ComfyUI workflows, which name their own ControlNets)");
  }
  const std::string out = OutputFlag(*args);
  if (out.empty()) return usage("-o OUT is required");
  if (model.empty()) {
    // Workers look the demo model up by name in their repositories (the worker images ship it).
    model = args->Has("workers") ? kDemoModelFile : DemoModelPath();
    if (model.empty()) {
      return usage(absl::StrCat("--model is required: the demo model (", kDemoModelFile,
                                ") is not installed; name an SD v1.x .safetensors or .ckpt"));
    }
    std::fprintf(
        stderr,
        "sd-graph %s: no --model given: using the demo model %s (trained by this project on "
        "drawn shapes; not Stable Diffusion)\n",
        name.c_str(), model.c_str());
  }
  // Distributed: --model names a model in the workers' repositories; they report its hash and
  // shape.
  std::unique_ptr<WorkerPool> pool;
  std::optional<ModelInfo> remote_model;
  // --vae: a standalone VAE replaces the checkpoint's; the pair travels as one model reference.
  // --vae and --lora (and <lora:...> tags): patches of the checkpoint, travelling with its name.
  // <lora:...> tags count in --prompt, or in `run`'s --set prompt=... (the last one).
  std::string prompt = args->GetOr("prompt", "");
  for (const std::string& kv : sets) {
    if (kv.rfind("prompt=", 0) == 0) prompt = kv.substr(7);
  }
  ModelFlags model_flags{model,
                         args->GetOr("vae", comfy ? comfy->vae : ""),
                         args->GetOr("lora-dir", ""),
                         prompt,
                         loras,
                         args->Has("workers"),
                         comfy ? comfy->controlnets : control.files};
  if (args->Has("vae") && model_flags.vae.empty()) return usage("--vae names no file");
  auto model_ref = ModelFromFlags(model_flags);
  if (!model_ref.ok()) return FailWithCode(name, model_ref.status());
  const std::string vae = model_flags.vae;
  const std::string model_name = model_ref->Format();
  if (int code = ConnectWorkers(name, *args, model_name, &pool, &remote_model); code != kExitOk)
    return code;
  // In-process runs open the checkpoint once, here, for what the command needs to know before the
  // run (inpainting method, native size); the run finds it in the same cache.
  auto models = std::make_shared<ModelCache>();
  std::string graph_path;
  if (mode == Mode::kRun) {
    if (args->positionals().size() != 1) return usage("expected one GRAPH file");
    graph_path = args->positionals()[0];
  } else {
    if (!args->positionals().empty())
      return usage(absl::StrCat("unexpected argument '", args->positionals()[0], "'"));
    std::string stock = mode == Mode::kTxt2Img ? "txt2img.pbtxt" : "img2img.pbtxt";
    if (!control.files.empty())
      stock = mode == Mode::kTxt2Img ? "txt2img_controlnet.pbtxt" : "img2img_controlnet.pbtxt";
    if (mode == Mode::kTxt2Img && args->Has("hires-scale")) {
      stock = "hires_fix.pbtxt";
    } else {
      for (const char* f : {"hires-denoise", "hires-steps", "hires-upscaler"}) {
        if (args->Has(f)) return usage(absl::StrCat("--", f, " applies with --hires-scale"));
      }
    }
    if (mode == Mode::kInpaint) {
      // The checkpoint decides the method: 9 UNet input channels mean an inpainting model.
      int64_t in_channels = 4;
      if (remote_model) {
        in_channels = remote_model->unet_in_channels;
      } else {
        auto entry = models->Open(model);
        if (!entry.ok()) return FailWithCode(name, entry.status());
        in_channels = (*entry)->config.unet.in_channels;
      }
      stock = in_channels == 9 ? "inpaint9.pbtxt" : "inpaint.pbtxt";
      if (in_channels == 9 && args->Get("strength")) {
        return usage(
            "--strength applies to ordinary checkpoints; 9-channel inpainting models always start "
            "from noise");
      }
    }
    graph_path = StockGraph(stock);
  }
  ImageNodeKinds();  // graphs may read and write image files themselves
  auto graph = comfy ? Graph::FromText(comfy->graph_text, graph_path) : Graph::Load(graph_path);
  if (graph.ok() && mode != Mode::kRun &&
      control.files.size() > 1) {  // more ControlNets than the stock one
    auto text = ReadWholeFile(graph_path, "graph");
    auto more = text.ok() ? AddControlNets(*text, static_cast<int>(control.files.size()) - 1)
                          : text.status();
    graph = more.ok() ? Graph::FromText(*more, graph_path) : more.status();
  }
  if (!graph.ok()) return FailWithCode(name, graph.status());

  // Graph inputs: from the shortcut flags, then --set.
  std::map<std::string, Value> inputs;
  auto set = [&](const std::string& key, const std::string& text) -> absl::Status {
    auto v = graph->ParseInputValue(key, text);
    if (!v.ok()) return v.status();
    inputs[key] = *v;
    return absl::OkStatus();
  };
  int64_t seed = 0, batch = 1;
  const bool seed_given = args->Get("seed").has_value();
  if (auto v = args->Get("seed"); v && !absl::SimpleAtoi(*v, &seed))
    return usage("--seed must be an integer");
  if (mode != Mode::kRun) {
    for (const char* f :
         {"prompt", "negative", "steps", "cfg", "width", "height", "strength", "eta"}) {
      if (auto v = args->Get(f); v && graph->Input(f)) {
        if (absl::Status s = set(f, *v); !s.ok()) return usage(std::string(s.message()));
      }
    }
    for (const auto& [flag, input] : {std::pair<const char*, const char*>{"clip-skip", "clip_skip"},
                                      {"weighting", "weighting"},
                                      {"hires-scale", "hires_scale"},
                                      {"hires-denoise", "hires_denoise"},
                                      {"hires-steps", "hires_steps"},
                                      {"hires-upscaler", "upscale_method"}}) {
      if (auto v = args->Get(flag); v && graph->Input(input)) {
        if (absl::Status s = set(input, *v); !s.ok()) return usage(std::string(s.message()));
      }
    }
    // The second pass runs as many steps as the first unless told.
    if (graph->Input("hires_steps") && !args->Get("hires-steps")) {
      if (absl::Status s = set("hires_steps", args->GetOr("steps", "50")); !s.ok())
        return usage(std::string(s.message()));
    }
    if (int64_t skip = 0;
        args->Get("clip-skip") && (!absl::SimpleAtoi(*args->Get("clip-skip"), &skip) || skip < 1)) {
      return usage("--clip-skip must be a positive integer (1: the last layer)");
    }
    if (auto v = args->Get("weighting"); v && !ParsePromptWeighting(*v).ok())
      return usage(std::string(ParsePromptWeighting(*v).status().message()));
    if (auto v = args->Get("batch");
        v && (!absl::SimpleAtoi(*v, &batch) || batch < 1 || batch > 10000)) {
      return usage("--batch must be an integer from 1 to 10000");
    }
    SamplerSpec sampler;
    sampler.name = absl::AsciiStrToLower(args->GetOr("sampler", "ddpm"));
    sampler.karras = args->Has("karras");
    if (absl::Status s = CheckSamplerSpec(sampler); !s.ok()) return usage(std::string(s.message()));
    inputs["sampler"] = sampler.name;
    inputs["karras"] = int64_t{sampler.karras ? 1 : 0};
    if (!args->Get("prompt")) return usage("--prompt is required");
  }
  if (int code = ReadInitAndMask(mode, name, *args, &inputs); code != kExitOk) return code;
  if (absl::Status s = SetControlNetInputs(control, *graph, &inputs); !s.ok())
    return FailWithCode(name, s);
  for (const std::string& kv : sets) {
    const size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0)
      return usage(absl::StrCat("--set '", kv, "' is not NAME=VALUE"));
    if (absl::Status s = set(kv.substr(0, eq), ReplaceAll(kv.substr(eq + 1), "{frame}", "0"));
        !s.ok()) {
      return usage(std::string(s.message()));
    }
  }
  std::vector<int64_t> frames;
  const bool farm = args->Has("frames");
  if (farm) {
    auto f = ParseFrames(*args->Get("frames"));
    if (!f.ok()) return usage(std::string(f.status().message()));
    if (batch != 1) return usage("--frames and --batch do not mix");
    frames = *f;
    if (auto p = FramePath(out, frames.front()); !p.ok())
      return usage(std::string(p.status().message()));
  }
  // Unless given, a graph's width and height are the model's native size when it declares one (a
  // workflow's own sizes stand, checked by its nodes).
  const int native = remote_model ? remote_model->native_size : LocalNativeSize(*models, model);
  for (const char* dim : {"width", "height"}) {
    if (comfy) break;
    if (native > 0 && graph->Input(dim) && !inputs.count(dim)) inputs[dim] = int64_t{native};
  }
  for (const char* dim : {"width", "height"}) {
    if (comfy) break;
    auto it = inputs.find(dim);
    const v1::GraphInput* in = graph->Input(dim);
    int64_t v = it != inputs.end() && std::holds_alternative<int64_t>(it->second)
                    ? std::get<int64_t>(it->second)
                : in && in->default_value().kind_case() == v1::Value::kI ? in->default_value().i()
                                                                         : 64;
    if (auto scale = inputs.find("hires_scale"); scale != inputs.end() && v > 0 && v % 64 == 0) {
      const double f = std::get<double>(scale->second);
      const int64_t out = static_cast<int64_t>(std::nearbyint(v / 8 * f)) * 8;
      if (!(f >= 1 && f <= 8) || out % 64 != 0) {
        return usage(
            absl::StrCat("--hires-scale ", f, ": ", dim, " ", v, " would become ", out,
                         "; the scale must be 1 to 8 and give a multiple of 64 (e.g. 1.5 or 2)"));
      }
    }
    if (v <= 0 || v % 64 != 0) {
      return usage(
          absl::StrCat("--", dim, " ", v,
                       ": SD v1.x needs a positive multiple of 64 (the VAE divides by 8 and "
                       "the UNet halves three more times)"));
    }
  }
  std::vector<std::pair<std::string, std::string>> dump_targets;
  RunOptions options;
  for (const std::string& d : dumps) {
    const size_t eq = d.find('=');
    if (eq == std::string::npos || eq == 0)
      return usage(absl::StrCat("--dump '", d, "' is not NODE.PORT=FILE.safetensors"));
    dump_targets.emplace_back(d.substr(0, eq), d.substr(eq + 1));
    options.capture.push_back(d.substr(0, eq));
  }

  RunContext ctx;
  ctx.checkpoint = model_name;
  ctx.tokenizer_dir = args->GetOr("tokenizer", "");
  ctx.embeddings_dir = args->GetOr("embeddings", comfy ? comfy->embeddings_dir : "");
  auto dtype = ParseFloatDType(args->GetOr("dtype", "f32"));
  if (!dtype.ok()) return usage(std::string(dtype.status().message()));
  ctx.dtype = ToTorchDType(*dtype);
  ctx.models = models;
  int threads = 0;
  if (auto t = args->Get("threads"); t && (!absl::SimpleAtoi(*t, &threads) || threads < 0)) {
    return usage("--threads must be a non-negative integer");
  }
  ConfigureThreads(threads);
  WarnIfSlowBlas("sd-graph");
  auto fail = [&](const absl::Status& s) -> int {
    FailWithCode(name, s);
    if (farm) std::printf("openjd_status: failed: %s\n", std::string(s.message()).c_str());
    std::fflush(stdout);
    return ExitCodeFor(s);
  };
  std::string model_hash, vae_hash;
  std::vector<std::string> lora_hashes, control_hashes;
  if (remote_model) {
    model_hash = remote_model->checkpoint_sha256;
    vae_hash = remote_model->vae_sha256;
    lora_hashes = remote_model->lora_sha256;
    options.dispatcher = pool.get();
  } else {
    auto entry = ctx.models->Open(model_name);
    if (!entry.ok()) return fail(entry.status());
    model_hash = (*entry)->hash;
    if (!vae.empty()) vae_hash = *ctx.models->FileHash(vae);  // opened with the reference
    for (const LoraRef& l : model_ref->loras) lora_hashes.push_back(*ctx.models->FileHash(l.name));
    for (const std::string& c : model_ref->controls)
      control_hashes.push_back(*ctx.models->FileHash(c));
    if (absl::Status s =
            CheckLoras(*ctx.models, *model_ref, args->Has("strict-lora"), "sd-graph " + name);
        !s.ok()) {
      return fail(s);
    }
  }
  std::signal(SIGTERM, OnTerminate);
  std::signal(SIGINT, OnTerminate);
  options.cancelled = &g_cancel;

  // One image (or frame) per job. Inputs are copied per job, so jobs can run at the same time.
  std::mutex print_mu;  // progress lines of concurrent jobs
  ImageJobs setup{mode, name, out, model, model_hash, &*graph, inputs, options, &ctx};
  setup.vae = vae;
  setup.vae_hash = vae_hash;
  setup.lora_hashes = LoraHashes(*model_ref, lora_hashes);
  setup.controlnets = ControlNetParameters(control, control_hashes);
  setup.comfy.checkpoint = Basename(model);
  if (!vae.empty()) setup.comfy.vae = Basename(vae);
  for (const LoraRef& l : model_ref->loras)
    setup.comfy.loras.push_back({Basename(l.name), l.unet, l.text});
  for (const std::string& c : model_ref->controls) setup.comfy.controlnets.push_back(Basename(c));
  setup.remote = remote_model.has_value();
  setup.farm = farm;
  setup.overwrite = args->Has("overwrite");
  setup.seed_given = seed_given;
  setup.frames = frames;
  setup.sets = sets;
  setup.seed = seed;
  setup.batch = batch;
  setup.jobs = farm ? static_cast<int>(frames.size()) : static_cast<int>(batch);
  setup.dump_targets = dump_targets;
  setup.print_mu = &print_mu;
  const int jobs = setup.jobs;
  auto render = [&](int b) { return RenderImage(setup, b); };

  // In-process, and for farm frames, jobs run one after another; on workers, --batch images run
  // --parallel at a time (default: one per worker) so they spread over the pool.
  int parallel = 1;
  if (pool && !farm) {
    parallel = static_cast<int>(pool->size());
    if (auto v = args->Get("parallel"); v && (!absl::SimpleAtoi(*v, &parallel) || parallel < 1)) {
      return usage("--parallel must be a positive integer");
    }
  }
  parallel = std::min(parallel, jobs);
  const auto run_start = std::chrono::steady_clock::now();
  auto succeeded = [&]() -> int {
    if (auto path = args->Get("stats")) {
      nlohmann::json j;
      j["command"] = name;
      j["images"] = jobs;
      j["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count();
      j["peak_rss_bytes"] = PeakRss();  // this process image's own peak (VmHWM)
      j["dtype"] = args->GetOr("dtype", "f32");
      if (absl::Status s = WriteWholeFile(*path, j.dump(2) + "\n", "--stats"); !s.ok()) return fail(s);
    }
    return kExitOk;
  };
  if (absl::Status s = RunJobs(jobs, parallel, render); !s.ok()) return fail(s);
  return succeeded();
}

}  // namespace

int RunCommand(const std::vector<std::string>& args) { return Generate(Mode::kRun, args); }
int Txt2ImgCommand(const std::vector<std::string>& args) { return Generate(Mode::kTxt2Img, args); }
int Img2ImgCommand(const std::vector<std::string>& args) { return Generate(Mode::kImg2Img, args); }
int InpaintCommand(const std::vector<std::string>& args) { return Generate(Mode::kInpaint, args); }

}  // namespace sd::cli

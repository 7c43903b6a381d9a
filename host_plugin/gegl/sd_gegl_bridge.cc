// The GEGL operations' way into the runtime: the same graph files, the same runtime, in-process
// (models cached for the life of the host process) or on workers (one pool per worker list).
#include "host_plugin/gegl/sd_gegl_bridge.h"

#include <dlfcn.h>
#include <torch/torch.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "host_plugin/runtime/comfy_import.h"
#include "host_plugin/runtime/graph.h"
#include "host_plugin/runtime/model_flags.h"
#include "host_plugin/runtime/stock_graphs.h"
#include "nodes/base/exception_status.h"
#include "nodes/base/file_util.h"
#include "nodes/base/install_dirs.h"
#include "nodes/base/runtime_info.h"
#include "nodes/base/status_macros.h"
#include "nodes/ops/image_resize.h"
#include "nodes/ops/model_cache.h"
#include "nodes/text/prompt_parser.h"
#include "nodes/weights/checkpoint.h"
#include "nodes/weights/demo_model.h"
#include "nodes/weights/model_ref.h"
#include "nodes/weights/sd_config.h"
#ifdef SD_HAVE_GRPC
#include "host_plugin/runtime/worker_pool.h"
#endif

namespace sd {
namespace {

std::string Str(const char* s) { return s ? s : ""; }

std::string PluginDir() {
  Dl_info info;
  if (::dladdr(reinterpret_cast<void*>(&sd_gegl_run), &info) == 0 || !info.dli_fname) return "";
  const std::string p = info.dli_fname;
  return p.substr(0, p.rfind('/'));
}

// Process-wide: the host keeps the plugin loaded, so models stay loaded between renders.
struct Shared {
  std::mutex mu;
  std::shared_ptr<ModelCache> models = std::make_shared<ModelCache>();
#ifdef SD_HAVE_GRPC
  std::map<std::string, std::shared_ptr<WorkerPool>> pools;
#endif
};

Shared& Process() {
  static Shared* s = new Shared();
  return *s;
}

int64_t Multiple64(int64_t v) { return std::max<int64_t>(64, (v + 32) / 64 * 64); }

// The checkpoint a `model` property means: itself, or with none the front ends' default (the demo
// model next to the installed plugin, or by file name on workers; for inpainting, its inpainting
// variant).
absl::StatusOr<std::string> ModelOrDemo(const std::string& model, bool on_workers,
                                        bool inpainting) {
  if (!model.empty()) return model;
  const std::string demo = DefaultModel(on_workers, PluginDir(), inpainting);
  if (demo.empty()) {
    return absl::NotFoundError(
        absl::StrCat("no model: set the `model` property to an SD v1.x checkpoint (the demo "
                     "model ",
                     kDemoModelFile, " is not installed)"));
  }
  return demo;
}

int NativeSizeOf(const std::string& model_property) {
  // No model, or the demo model by the name workers know it by: the local copy of the demo model.
  const bool demo_by_name = model_property == kDemoModelFile && !IsReadableFile(model_property);
  const std::string path =
      model_property.empty() || demo_by_name ? DemoModelPath(PluginDir()) : model_property;
  if (path.empty() || !IsReadableFile(path)) return kSd1NativeSize;
  auto entry = Process().models->Open(path);
  return entry.ok() ? NativeSize((*entry)->checkpoint->metadata()).value_or(kSd1NativeSize)
                    : kSd1NativeSize;
}

// Runs the graph with the operation's progress and cancellation; its first output (one image, or
// the first of a batch) resized to out_w x out_h.
absl::StatusOr<torch::Tensor> RunForPicture(const Graph& graph,
                                            const std::map<std::string, Value>& inputs,
                                            RunContext& ctx, RunOptions& options,
                                            const std::atomic<bool>& cancel, const SdGeglRequest& r,
                                            int64_t out_w, int64_t out_h) {
  options.cancelled = &cancel;
  if (r.progress) {
    options.on_progress = [&](const Progress& p) {
      if (p.steps > 0)
        r.progress(r.progress_user, static_cast<double>(p.step) / p.steps, p.node.c_str());
    };
  }
  SD_ASSIGN_OR_RETURN(auto outputs, graph.Run(inputs, ctx, options));
  const Value& image = outputs.at(graph.config().output(0).name());
  if (!std::holds_alternative<torch::Tensor>(image))
    return absl::InternalError("the graph's first output is not an image");
  torch::Tensor px = std::get<torch::Tensor>(image);
  if (px.dim() == 4) px = px[0];  // a ComfyUI SaveImage's batch: its first picture
  return ResizePixels(px.contiguous(), out_w, out_h);
}

// The ControlNet's hint (the picture on the aux pad) and strength, as the graph's inputs.
absl::Status SetHint(const SdGeglRequest& r, const Graph& graph,
                     std::map<std::string, Value>& inputs) {
  if (Str(r.controlnet).empty()) {
    if (r.hint_rgb)
      return absl::InvalidArgumentError(
          "a picture is connected to the aux pad but no ControlNet is set (controlnet)");
    return absl::OkStatus();
  }
  if (!r.hint_rgb || r.hint_width <= 0 || r.hint_height <= 0)
    return absl::InvalidArgumentError(
        "a ControlNet needs its hint: connect a picture to the aux pad");
  if (!graph.Input("hint"))
    return absl::InvalidArgumentError("the graph has no `hint` input for the ControlNet");
  inputs["hint"] = torch::from_blob(const_cast<unsigned char*>(r.hint_rgb),
                                    {r.hint_height, r.hint_width, 3}, torch::kUInt8)
                       .clone();
  if (graph.Input("control_strength")) inputs["control_strength"] = r.control_strength;
  return absl::OkStatus();
}

absl::StatusOr<torch::Tensor> Run(const SdGeglRequest& r, const std::atomic<bool>& cancel) {
  const std::string mode = Str(r.mode), workers = Str(r.workers);
  SD_ASSIGN_OR_RETURN(const std::string base,
                      ModelOrDemo(Str(r.model), !workers.empty(), mode == "inpaint"));
  auto model_flags = [&](bool remote) {
    ModelFlags f{base, Str(r.vae), "", Str(r.prompt), {}, remote};
    if (!Str(r.controlnet).empty()) f.controlnets.push_back(Str(r.controlnet));
    for (absl::string_view l : absl::StrSplit(Str(r.lora), ',', absl::SkipWhitespace()))
      f.loras.emplace_back(absl::StripAsciiWhitespace(l));
    return f;
  };
  if (mode != "txt2img" && mode != "img2img" && mode != "inpaint")
    return absl::InvalidArgumentError("unknown mode " + mode);
  if (r.steps < 1 || r.steps > 1000)
    return absl::InvalidArgumentError(absl::StrCat("steps ", r.steps, ": 1 to 1000"));
  RunContext ctx;
  ctx.tokenizer_dir = Str(r.tokenizer);
  if (ctx.tokenizer_dir.empty() && !std::getenv("SDGRAPH_TOKENIZER")) {
    // Installed as PREFIX/lib/gegl-0.4/sdgraph-gegl.so next to PREFIX/share/sdgraph (the host's
    // executable says nothing about where the plugin's data is).
    ctx.tokenizer_dir = FindInstalledDir(PluginDir(), "clip-tokenizer", "vocab.json");
  }
  ctx.models = Process().models;
  ctx.embeddings_dir = Str(r.embeddings);
  RunOptions options;
  int64_t in_channels = 4;
#ifdef SD_HAVE_GRPC
  std::shared_ptr<WorkerPool> pool;
  if (!workers.empty()) {
    WorkerPoolOptions po;
    SD_ASSIGN_OR_RETURN(po.targets, WorkerPool::ParseTargets(workers));
    SD_ASSIGN_OR_RETURN(po.token, ReadToken(Str(r.token_file)));  // else $SD_WORKER_TOKEN
    po.tls_ca = Str(r.tls_ca);
    po.tls_cert = Str(r.tls_cert);
    po.tls_key = Str(r.tls_key);
    po.tls_server_name = Str(r.tls_server_name);
    po.require_tls = r.require_tls != 0;
    // One pool per connection setting: the same workers with other credentials are another pool.
    const std::string key =
        absl::StrCat(workers, "|", po.tls_ca, "|", po.tls_cert, "|", po.tls_key, "|",
                     po.tls_server_name, "|", po.require_tls, "|", po.token);
    std::lock_guard<std::mutex> lock(Process().mu);
    auto& p = Process().pools[key];
    if (!p) {
      SD_ASSIGN_OR_RETURN(auto created, WorkerPool::Create(po));
      p = std::move(created);
    }
    pool = p;
  }
  if (pool) {
    SD_ASSIGN_OR_RETURN(ModelRef ref, ModelFromFlags(model_flags(/*remote=*/true)));
    ctx.checkpoint = ref.Format();
    SD_ASSIGN_OR_RETURN(ModelInfo info, pool->Prepare(ctx.checkpoint));
    in_channels = info.unet_in_channels;
    options.dispatcher = pool.get();
  }
#else
  if (!workers.empty())
    return absl::UnimplementedError(
        "this plugin was built without gRPC: `workers` is not available");
#endif
  if (!options.dispatcher) {
    SD_ASSIGN_OR_RETURN(ModelRef ref, ModelFromFlags(model_flags(/*remote=*/false)));
    ctx.checkpoint = ref.Format();
    SD_ASSIGN_OR_RETURN(auto entry, ctx.models->Open(ctx.checkpoint));
    SD_RETURN_IF_ERROR(CheckLoras(*ctx.models, ref, /*strict=*/false, "sd-gegl"));
    in_channels = entry->config.unet.in_channels;
  }
  std::string graph_path = Str(r.graph);
  if (graph_path.empty()) {
    SD_ASSIGN_OR_RETURN(const std::string stock, StockGraphFor({mode, !Str(r.controlnet).empty(),
                                                                /*hires=*/false, in_channels}));
    graph_path = StockGraphPath(stock, PluginDir());
  }
  // A ComfyUI workflow: its own settings stand, but for a non-empty prompt or negative prompt, the
  // seed (the operation's way to vary it) and the size (the operation's: 0 is the model's native).
  const bool comfy = IsComfyWorkflowFile(graph_path);
  if (comfy && mode != "txt2img") {
    return absl::InvalidArgumentError(
        "ComfyUI workflows run in sd:txt2img (their LoadImage nodes read files)");
  }
  absl::StatusOr<Graph> loaded = absl::UnknownError("");
  if (comfy) {
    SD_ASSIGN_OR_RETURN(ComfyGraph workflow, ImportComfyWorkflow(graph_path));
    loaded = Graph::FromText(workflow.text, graph_path);
  } else {
    loaded = Graph::Load(graph_path);
  }
  if (!loaded.ok()) return loaded.status();
  Graph graph = *std::move(loaded);

  std::map<std::string, Value> inputs;
  auto set = [&](const char* name, Value v) {
    if (graph.Input(name)) inputs[name] = std::move(v);
  };
  if (comfy) {
    if (r.hint_rgb)
      return absl::InvalidArgumentError(
          "a ComfyUI workflow takes its hints from its LoadImage nodes: disconnect the aux pad");
    if (!Str(r.prompt).empty()) set("prompt", Str(r.prompt));
    if (!Str(r.negative).empty()) set("negative", Str(r.negative));
    set("seed", int64_t{r.seed});
    set("width", int64_t{r.width});
    set("height", int64_t{r.height});
    return RunForPicture(graph, inputs, ctx, options, cancel, r, r.width, r.height);
  }
  set("prompt", Str(r.prompt));
  set("negative", Str(r.negative));
  set("seed", int64_t{r.seed});
  set("steps", int64_t{r.steps});
  set("cfg", r.cfg);
  if (const std::string w = Str(r.weighting); !w.empty()) {
    SD_RETURN_IF_ERROR(ParsePromptWeighting(w).status());
    set("weighting", w);
  }
  if (r.clip_skip > 1) set("clip_skip", int64_t{r.clip_skip});
  const std::string sampler = absl::AsciiStrToLower(Str(r.sampler));
  set("sampler", sampler.empty() ? std::string("ddpm") : sampler);
  int64_t out_w = r.width, out_h = r.height;
  if (mode == "txt2img") {
    // 0: the model's native size.
    if (out_w == 0 || out_h == 0) {
      const int native = NativeSizeOf(Str(r.model));
      if (out_w == 0) out_w = native;
      if (out_h == 0) out_h = native;
    }
    if (out_w < 64 || out_h < 64 || out_w % 64 || out_h % 64) {
      return absl::InvalidArgumentError(absl::StrCat(
          "width and height must be multiples of 64 (SD v1.x), got ", out_w, "x", out_h));
    }
    set("width", out_w);
    set("height", out_h);
  } else {
    if (!r.init_rgb || r.init_width <= 0 || r.init_height <= 0)
      return absl::InvalidArgumentError("no input image");
    out_w = r.init_width;
    out_h = r.init_height;
    const int64_t w = Multiple64(out_w), h = Multiple64(out_h);
    torch::Tensor init =
        torch::from_blob(const_cast<unsigned char*>(r.init_rgb), {out_h, out_w, 3}, torch::kUInt8)
            .clone();
    SD_ASSIGN_OR_RETURN(torch::Tensor sized, ResizePixels(init, w, h));
    set("init", sized);
    set("strength", r.strength);
    if (mode == "inpaint") {
      if (!r.mask) return absl::InvalidArgumentError("no mask: connect one to the aux pad");
      torch::Tensor mask =
          torch::from_blob(const_cast<unsigned char*>(r.mask), {out_h, out_w, 1}, torch::kUInt8)
              .clone();
      SD_ASSIGN_OR_RETURN(torch::Tensor sized_mask, ResizePixels(mask, w, h));
      set("mask", sized_mask.expand({h, w, 3}).contiguous());
    }
  }
  SD_RETURN_IF_ERROR(SetHint(r, graph, inputs));
  return RunForPicture(graph, inputs, ctx, options, cancel, r, out_w, out_h);
}

char* Dup(const std::string& s) {
  char* p = static_cast<char*>(std::malloc(s.size() + 1));
  std::memcpy(p, s.c_str(), s.size() + 1);
  return p;
}

}  // namespace
}  // namespace sd

extern "C" int sd_gegl_run(const SdGeglRequest* request, float** rgba, int* out_width,
                           int* out_height, char** error) {
  *rgba = nullptr;
  *error = nullptr;
  std::atomic<bool> cancel{false};
  // The request's flag is a plain int the operation sets; mirror it into the runtime's atomic.
  std::atomic<bool> done{false};
  std::thread watch([&] {
    while (!done.load()) {
      if (request->cancel && *request->cancel) cancel.store(true);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  // Nothing may throw into the host application: GIMP would go down with us.
  absl::StatusOr<torch::Tensor> px =
      sd::CatchExceptions("", [&]() -> absl::StatusOr<torch::Tensor> {
        c10::InferenceMode guard;
        // Every core, set on the host's render thread: LibTorch's own default can be one thread
        // (a VM whose CPU topology it misreads), as the command line's is.
        sd::ConfigureThreads(0);
        return sd::Run(*request, cancel);
      });
  done.store(true);
  watch.join();
  if (!px.ok()) {
    *error = sd::Dup(std::string(px.status().ToString()));
    return 1;
  }
  const int64_t h = px->size(0), w = px->size(1);
  float* out = static_cast<float*>(std::malloc(sizeof(float) * 4 * h * w));
  if (out == nullptr) {
    *error = sd::Dup("RESOURCE_EXHAUSTED: out of memory for the output image");
    return 1;
  }
  const uint8_t* src = px->data_ptr<uint8_t>();
  for (int64_t i = 0; i < h * w; ++i) {
    for (int c = 0; c < 3; ++c) out[i * 4 + c] = src[i * 3 + c] / 255.0f;
    out[i * 4 + 3] = 1.0f;
  }
  *rgba = out;
  *out_width = static_cast<int>(w);
  *out_height = static_cast<int>(h);
  return 0;
}

extern "C" void sd_gegl_free(void* p) { std::free(p); }

extern "C" int sd_gegl_native_size(const char* model) {
  return sd::CatchExceptions(
             "", [&]() -> absl::StatusOr<int> { return sd::NativeSizeOf(sd::Str(model)); })
      .value_or(sd::kSd1NativeSize);
}

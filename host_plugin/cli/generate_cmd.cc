// sd-graph run / txt2img / img2img / inpaint: run a graph file (the shortcuts run the stock
// graphs) in-process or on workers and write the image, with its generation parameters in the file
// (PNG "parameters" text, as other SD tools). Generate() reads as the steps it takes: the command
// line (generate_invocation.h), the model and the workers, the graph, its inputs
// (generate_inputs.h), then one job per image or frame (render_jobs.h).
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
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
#include "host_plugin/cli/generate_inputs.h"
#include "host_plugin/cli/generate_invocation.h"
#include "host_plugin/cli/generate_util.h"
#include "host_plugin/cli/image_io.h"
#include "host_plugin/cli/render_jobs.h"
#include "host_plugin/runtime/comfy_import.h"
#include "host_plugin/runtime/control_graph.h"
#include "host_plugin/runtime/graph.h"
#include "host_plugin/runtime/placement_router.h"
#include "host_plugin/runtime/stock_graphs.h"
#ifdef SD_HAVE_GRPC
#include "host_plugin/runtime/worker_pool.h"
#else
namespace sd {  // built without gRPC: --workers is refused, these stand in for the types
struct ModelInfo {
  std::string sha256;
  int unet_in_channels = 4;
  int native_size = 0;
  int text_width = 0;
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

#ifdef SD_HAVE_GRPC
// The pool of the workers that `flag` lists (--workers, --loop-workers), connected as the flags say
// and asked for the model (they report its hash and shape). kExitOk, or the exit code after saying
// why.
int OpenPool(const std::string& name, const Args& args, const char* flag,
             const std::string& model_name, std::unique_ptr<WorkerPool>* pool, ModelInfo* info) {
  auto usage = [&](const std::string& msg) { return UsageError(name, msg); };
  auto targets = WorkerPool::ParseTargets(*args.Get(flag));
  if (!targets.ok()) return usage(absl::StrCat("--", flag, ": ", targets.status().message()));
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
  auto prepared = (*pool)->Prepare(model_name);
  if (!prepared.ok()) return FailWithCode(name, prepared.status());
  *info = *prepared;
  return kExitOk;
}
#endif

// Distributed runs: connects to --workers (and --loop-workers, which must have the same model
// file). Without --workers, refuses the flags that only apply to them. kExitOk, or the exit code
// after saying why.
int ConnectWorkers(const std::string& name, const Args& args, const std::string& model_name,
                   std::unique_ptr<WorkerPool>* pool, std::unique_ptr<WorkerPool>* loop_pool,
                   std::optional<ModelInfo>* remote_model) {
  auto usage = [&](const std::string& msg) { return UsageError(name, msg); };
  if (args.Has("workers")) {
#ifdef SD_HAVE_GRPC
    ModelInfo info;
    if (int c = OpenPool(name, args, "workers", model_name, pool, &info); c != kExitOk) return c;
    *remote_model = info;
    if (args.Has("loop-workers")) {
      ModelInfo loops;
      if (int c = OpenPool(name, args, "loop-workers", model_name, loop_pool, &loops); c != kExitOk)
        return c;
      if (loops.sha256 != info.sha256) {
        return FailWithCode(name, absl::FailedPreconditionError(absl::StrCat(
                                      "the --loop-workers' '", model_name, "' has sha256 ",
                                      loops.sha256, ", the --workers' has ", info.sha256,
                                      "; put the same file on every worker")));
      }
    }
#else
    (void)model_name, (void)pool, (void)loop_pool, (void)remote_model;
    return usage("--workers: this sd-graph was built without gRPC (SD_WITH_GRPC=OFF)");
#endif
  } else {
    for (const char* f : {"parallel", "token-file", "tls-ca", "tls-cert", "tls-key",
                          "tls-server-name", "wire-dtype", "call-timeout", "max-attempts",
                          "max-message-mb", "require-tls", "loop-workers"}) {
      if (args.Has(f))
        return usage(absl::StrCat("--", f, " applies to distributed runs (--workers)"));
    }
  }
  return kExitOk;
}

// The model the run uses (with its VAE, LoRAs and ControlNets), local or on workers.
struct PreparedModel {
  ModelRef ref;
  ModelFlags flags;  // what it was made from (graphs' ApplyLora nodes find their LoRAs alike)
  std::string name;  // ref.Format(): what nodes and workers are given
  std::unique_ptr<WorkerPool> pool;
  std::unique_ptr<WorkerPool> loop_pool;    // --loop-workers
  std::unique_ptr<PlacementRouter> router;  // with loop_pool: node calls to pool, loops there
  std::optional<ModelInfo> remote;
  // In-process runs open the checkpoint once, here, for what the command needs to know before the
  // run (inpainting method, native size); the run finds it in the same cache.
  std::shared_ptr<ModelCache> models = std::make_shared<ModelCache>();
};

int PrepareModel(const Invocation& inv, PreparedModel* m) {
  const Args& args = inv.args;
  // --vae and --lora (and <lora:...> tags): patches of the checkpoint, travelling with its name.
  ModelFlags flags{inv.model,
                   args.GetOr("vae", inv.comfy ? inv.comfy->vae : ""),
                   args.GetOr("lora-dir", ""),
                   inv.Prompt(),
                   inv.loras,
                   args.Has("workers"),
                   inv.comfy ? inv.comfy->controlnets : inv.control.files};
  if (args.Has("vae") && flags.vae.empty()) return UsageError(inv.name, "--vae names no file");
  auto ref = ModelFromFlags(flags);
  if (!ref.ok()) return FailWithCode(inv.name, ref.status());
  m->ref = *std::move(ref);
  m->flags = flags;
  m->name = m->ref.Format();
  return ConnectWorkers(inv.name, args, m->name, &m->pool, &m->loop_pool, &m->remote);
}

// The graph file (`run`'s, or the stock graph for the mode and the checkpoint), with one more
// ControlNet chain per extra --controlnet.
int LoadGraph(const Invocation& inv, PreparedModel& m, std::optional<Graph>* graph) {
  const Args& args = inv.args;
  auto usage = [&](const std::string& msg) { return UsageError(inv.name, msg); };
  std::string path;
  if (inv.mode == Mode::kRun) {
    if (args.positionals().size() != 1) return usage("expected one GRAPH file");
    path = args.positionals()[0];
  } else {
    if (!args.positionals().empty())
      return usage(absl::StrCat("unexpected argument '", args.positionals()[0], "'"));
    if (inv.mode != Mode::kTxt2Img || !args.Has("hires-scale")) {
      for (const char* f : {"hires-denoise", "hires-steps", "hires-upscaler"}) {
        if (args.Has(f)) return usage(absl::StrCat("--", f, " applies with --hires-scale"));
      }
    }
    // The checkpoint decides the inpainting method: 9 UNet input channels mean an inpainting model.
    int64_t in_channels = 4;
    if (inv.mode == Mode::kInpaint) {
      if (m.remote) {
        in_channels = m.remote->unet_in_channels;
      } else {
        auto entry = m.models->Open(inv.model);
        if (!entry.ok()) return FailWithCode(inv.name, entry.status());
        in_channels = (*entry)->config.unet.in_channels;
      }
      if (in_channels == 9 && args.Get("strength")) {
        return usage(
            "--strength applies to ordinary checkpoints; 9-channel inpainting models always start "
            "from noise");
      }
    }
    auto stock = StockGraphFor(
        {ModeName(inv.mode), !inv.control.files.empty(), args.Has("hires-scale"), in_channels});
    if (!stock.ok()) return usage(std::string(stock.status().message()));
    path = StockGraph(*stock);
  }
  ImageNodeKinds();  // graphs may read and write image files themselves
  auto loaded = inv.comfy ? Graph::FromText(inv.comfy->graph_text, path) : Graph::Load(path);
  if (loaded.ok() && inv.mode != Mode::kRun && inv.control.files.size() > 1) {
    // More ControlNets than the stock graph's one.
    auto text = ReadWholeFile(path, "graph");
    auto more = text.ok() ? AddControlNets(*text, static_cast<int>(inv.control.files.size()) - 1)
                          : text.status();
    loaded = more.ok() ? Graph::FromText(*more, path) : more.status();
  }
  if (!loaded.ok()) return FailWithCode(inv.name, loaded.status());
  graph->emplace(*std::move(loaded));
  return kExitOk;
}

// --frames (farm mode), --dump, and the run's context (dtype, threads, tokenizer, embeddings).
int SetUpRun(const Invocation& inv, const PreparedModel& m, int64_t batch, ImageJobs* setup,
             RunContext* ctx, RunOptions* options) {
  const Args& args = inv.args;
  auto usage = [&](const std::string& msg) { return UsageError(inv.name, msg); };
  setup->farm = args.Has("frames");
  if (setup->farm) {
    auto f = ParseFrames(*args.Get("frames"));
    if (!f.ok()) return usage(std::string(f.status().message()));
    if (batch != 1) return usage("--frames and --batch do not mix");
    setup->frames = *f;
    if (auto p = FramePath(inv.out, setup->frames.front()); !p.ok())
      return usage(std::string(p.status().message()));
  }
  for (const std::string& d : inv.dumps) {
    const size_t eq = d.find('=');
    if (eq == std::string::npos || eq == 0)
      return usage(absl::StrCat("--dump '", d, "' is not NODE.PORT=FILE.safetensors"));
    setup->dump_targets.emplace_back(d.substr(0, eq), d.substr(eq + 1));
    options->capture.push_back(d.substr(0, eq));
  }
  if (auto placement = args.Get("placement")) {
    if (!m.remote) return usage("--placement says where loops run on --workers; there are none");
    if (*placement == "nodes") {
      options->placement = v1::NODES;
    } else if (*placement == "worker") {
      options->placement = v1::WORKER;
    } else {
      return usage(absl::StrCat("--placement '", *placement, "': say nodes or worker"));
    }
  }
  if (auto batch = args.Get("cfg-batch")) {
    if (*batch == "auto") {
      options->cfg_batch = v1::CFG_BATCH_AUTO;
    } else if (*batch == "on") {
      options->cfg_batch = v1::CFG_BATCH_ON;
    } else if (*batch == "off") {
      options->cfg_batch = v1::CFG_BATCH_OFF;
    } else {
      return usage(absl::StrCat("--cfg-batch '", *batch, "': say auto, on or off"));
    }
  }
  ctx->checkpoint = m.name;
  ctx->part_file = [flags = m.flags](const std::string& part, const std::string& name) {
    return PartPath(flags, part, name);
  };
  ctx->tokenizer_dir = args.GetOr("tokenizer", "");
  ctx->embeddings_dir = args.GetOr("embeddings", inv.comfy ? inv.comfy->embeddings_dir : "");
  auto dtype = ParseComputeDType(args.GetOr("dtype", "f32"));
  if (!dtype.ok()) return usage(std::string(dtype.status().message()));
  ctx->dtype = ToTorchDType(dtype->dtype);
  ctx->int8 = dtype->int8;
  ctx->models = m.models;
  int threads = 0;
  if (auto t = args.Get("threads"); t && (!absl::SimpleAtoi(*t, &threads) || threads < 0))
    return usage("--threads must be a non-negative integer");
  ConfigureThreads(threads);
  WarnIfSlowBlas("sd-graph");
  return kExitOk;
}

// What an image records of model reference `model` (its LoRAs' hashes, its VAE): the workers' word,
// or this process's cache. In-process, its LoRAs that `checked` does not name are checked against
// the model (CheckLoras).
absl::StatusOr<ImageJobs::ModelParts> PartsOfModel(const Invocation& inv, const PreparedModel& m,
                                                   ModelCache& models, const std::string& model,
                                                   const ModelRef& checked) {
  SD_ASSIGN_OR_RETURN(const ModelRef ref, ModelRef::Parse(model));
  ImageJobs::ModelParts parts;
  parts.vae = ref.vae;
  std::vector<std::string> sha256s;
  if (m.remote) {
    SD_ASSIGN_OR_RETURN(const ModelInfo info, m.pool->Prepare(model));  // once per reference
    sha256s = info.lora_sha256;
    parts.vae_hash = info.vae_sha256;
  } else {
    if (!ref.vae.empty()) {
      SD_ASSIGN_OR_RETURN(parts.vae_hash, models.FileHash(ref.vae));
    }
    ModelRef unchecked = ref;
    unchecked.loras.clear();
    for (const LoraRef& l : ref.loras) {
      SD_ASSIGN_OR_RETURN(std::string sha256, models.FileHash(l.name));
      sha256s.push_back(std::move(sha256));
      auto named = [&](const LoraRef& c) { return c.name == l.name; };
      if (std::none_of(checked.loras.begin(), checked.loras.end(), named))
        unchecked.loras.push_back(l);
    }
    SD_RETURN_IF_ERROR(
        CheckLoras(models, unchecked, inv.args.Has("strict-lora"), "sd-graph " + inv.name));
  }
  parts.loras = LoraHashEntries(ref, sha256s);
  return parts;
}

// The files' hashes for the PNG parameters: the workers' word, or this process's cache. Local runs
// also check the LoRAs against the model here, and those a graph's ApplyLora nodes add as the run
// reaches them (ImageJobs::parts_of; once per model reference).
absl::Status RecordModelFiles(const Invocation& inv, const PreparedModel& m, ModelCache& models,
                              ImageJobs* setup) {
  std::vector<std::string> control_hashes;
  if (m.remote) {
    setup->model_hash = m.remote->checkpoint_sha256;
    setup->text_width = m.remote->text_width;
  } else {
    SD_ASSIGN_OR_RETURN(auto entry, models.Open(m.name));
    setup->model_hash = entry->hash;
    setup->text_width = entry->config.clip.width;
    for (const std::string& c : m.ref.controls) control_hashes.push_back(*models.FileHash(c));
  }
  SD_ASSIGN_OR_RETURN(setup->model_parts, PartsOfModel(inv, m, models, m.name, ModelRef{}));
  struct Known {
    std::mutex mu;
    std::map<std::string, ImageJobs::ModelParts> parts;
  };
  setup->parts_of = [&inv, &m, &models, known = std::make_shared<Known>()](
                        const std::string& model) -> absl::StatusOr<ImageJobs::ModelParts> {
    std::lock_guard<std::mutex> lock(known->mu);  // jobs at once: one check, one warning
    if (auto it = known->parts.find(model); it != known->parts.end()) return it->second;
    SD_ASSIGN_OR_RETURN(ImageJobs::ModelParts parts, PartsOfModel(inv, m, models, model, m.ref));
    return known->parts.emplace(model, std::move(parts)).first->second;
  };
  setup->controlnets = ControlNetParameters(inv.control, control_hashes);
  setup->comfy.checkpoint = Basename(inv.model);
  if (!m.flags.vae.empty()) setup->comfy.vae = Basename(m.flags.vae);
  for (const LoraRef& l : m.ref.loras)
    setup->comfy.loras.push_back({Basename(l.name), l.unet, l.text});
  for (const std::string& c : m.ref.controls) setup->comfy.controlnets.push_back(Basename(c));
  return absl::OkStatus();
}

// Writes --stats: images, seconds, peak memory.
absl::Status WriteStats(const Invocation& inv, int jobs, double seconds) {
  auto path = inv.args.Get("stats");
  if (!path) return absl::OkStatus();
  nlohmann::json j;
  j["command"] = inv.name;
  j["images"] = jobs;
  j["seconds"] = seconds;
  j["peak_rss_bytes"] = PeakRss();  // this process image's own peak (VmHWM)
  j["dtype"] = inv.args.GetOr("dtype", "f32");
  return WriteWholeFile(*path, j.dump(2) + "\n", "--stats");
}

int Generate(Mode mode, const std::vector<std::string>& argv) {
  Invocation inv;
  if (std::optional<int> over = ParseInvocation(mode, argv, &inv)) return *over;
  const std::string& name = inv.name;
  PreparedModel m;
  if (int c = PrepareModel(inv, &m); c != kExitOk) return c;
  std::optional<Graph> graph;
  if (int c = LoadGraph(inv, m, &graph); c != kExitOk) return c;
  GraphInputs in;
  if (int c = SetGraphInputs(inv, *graph, &in); c != kExitOk) return c;
  const int native = m.remote ? m.remote->native_size : LocalNativeSize(*m.models, inv.model);
  if (int c = SetImageSize(inv, *graph, native, &in); c != kExitOk) return c;

  ImageJobs setup{mode, name, inv.out, inv.model, "", &*graph, {}, {}, nullptr};
  RunContext ctx;
  RunOptions options;
  if (int c = SetUpRun(inv, m, in.batch, &setup, &ctx, &options); c != kExitOk) return c;
  auto fail = [&](const absl::Status& s) -> int {
    FailWithCode(name, s);
    if (setup.farm) std::printf("openjd_status: failed: %s\n", std::string(s.message()).c_str());
    std::fflush(stdout);
    return ExitCodeFor(s);
  };
  if (absl::Status s = RecordModelFiles(inv, m, *ctx.models, &setup); !s.ok()) return fail(s);
  if (m.remote) options.dispatcher = m.pool.get();
  if (m.loop_pool) {
    m.router = std::make_unique<PlacementRouter>(*m.pool, *m.loop_pool);
    options.dispatcher = m.router.get();
    if (options.placement == v1::PLACEMENT_UNSPECIFIED) options.placement = v1::WORKER;
  }
  std::signal(SIGTERM, OnTerminate);
  std::signal(SIGINT, OnTerminate);
  options.cancelled = &g_cancel;

  // One image (or frame) per job. Inputs are copied per job, so jobs can run at the same time.
  std::mutex print_mu;  // progress lines of concurrent jobs
  setup.inputs = in.values;
  setup.options = options;
  setup.ctx = &ctx;
  setup.remote = m.remote.has_value();
  setup.overwrite = inv.args.Has("overwrite");
  setup.seed_given = in.seed_given;
  setup.sets = inv.sets;
  setup.seed = in.seed;
  setup.batch = in.batch;
  setup.jobs = setup.farm ? static_cast<int>(setup.frames.size()) : static_cast<int>(in.batch);
  setup.print_mu = &print_mu;
  // In-process, and for farm frames, jobs run one after another; on workers, --batch images run
  // --parallel at a time (default: one per worker) so they spread over the pool.
  int parallel = 1;
  if (m.pool && !setup.farm) {
    parallel = static_cast<int>(m.pool->size());
    if (auto v = inv.args.Get("parallel"); v && (!absl::SimpleAtoi(*v, &parallel) || parallel < 1))
      return UsageError(name, "--parallel must be a positive integer");
  }
  parallel = std::min(parallel, setup.jobs);
  const auto start = std::chrono::steady_clock::now();
  if (absl::Status s = RunJobs(setup.jobs, parallel, [&](int b) { return RenderImage(setup, b); });
      !s.ok()) {
    return fail(s);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (absl::Status s = WriteStats(inv, setup.jobs, seconds); !s.ok()) return fail(s);
  return kExitOk;
}

}  // namespace

int RunCommand(const std::vector<std::string>& args) { return Generate(Mode::kRun, args); }
int Txt2ImgCommand(const std::vector<std::string>& args) { return Generate(Mode::kTxt2Img, args); }
int Img2ImgCommand(const std::vector<std::string>& args) { return Generate(Mode::kImg2Img, args); }
int InpaintCommand(const std::vector<std::string>& args) { return Generate(Mode::kInpaint, args); }

}  // namespace sd::cli

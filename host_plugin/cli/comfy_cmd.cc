// sd-graph import-comfy, and what `run` needs to run a ComfyUI workflow directly.
#include <cstdio>
#include <filesystem>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "host_plugin/cli/comfy_run.h"
#include "host_plugin/cli/commands.h"
#include "host_plugin/cli/common.h"
#include "host_plugin/cli/generate_util.h"
#include "host_plugin/cli/image_io.h"
#include "host_plugin/runtime/comfy_export.h"
#include "host_plugin/runtime/comfy_import.h"
#include "host_plugin/runtime/graph.h"
#include "nodes/base/file_util.h"
#include "nodes/ops/node.h"
#include "nodes/weights/demo_model.h"

namespace sd::cli {
namespace {

namespace fs = std::filesystem;

constexpr char kHelp[] =
    "usage: sd-graph import-comfy WORKFLOW.json|IMAGE.png -o GRAPH.pbtxt [--input-dir DIR] "
    "[--overwrite]\n"
    "\n"
    "Translates a ComfyUI workflow in its API format (\"Save (API Format)\", or the PNG ComfyUI "
    "saved,\n"
    "which carries it) into a commented graph file. Each ComfyUI node becomes the nodes named "
    "after its\n"
    "id; its widget values become graph inputs (equal values of one meaning share one: seed, "
    "steps,\n"
    "cfg, prompt, negative, width, height, denoise, ...; differing ones get the node id: seed_3).\n"
    "The workflow's checkpoint, VAE, LoRAs and ControlNets are named in the file's header (`run`\n"
    "takes them from --model, --vae, --lora and --controlnet); LoRAs that not every sampler and\n"
    "text encoder uses become ApplyLora nodes instead. `sd-graph run WORKFLOW.json` runs a "
    "workflow without this step.\n"
    "\n"
    "Supported nodes: CheckpointLoaderSimple, VAELoader, LoraLoader, LoraLoaderModelOnly,\n"
    "CLIPSetLastLayer, CLIPTextEncode, EmptyLatentImage, KSampler, KSamplerAdvanced, VAEDecode,\n"
    "VAEEncode, LoadImage, SaveImage, PreviewImage, LatentUpscale, LatentUpscaleBy, ImageScale,\n"
    "ImageScaleBy, ImageInvert, LoadImageMask, InvertMask, VAEEncodeForInpaint, "
    "SetLatentNoiseMask,\n"
    "RepeatLatentBatch, LatentFromBatch, ControlNetLoader, ControlNetApply, "
    "ControlNetApplyAdvanced.\n"
    "Samplers: euler, euler_ancestral, dpmpp_2m, ddim, ddpm;\n"
    "schedulers: normal, karras, exponential, simple, ddim_uniform, sgm_uniform. Anything else is\n"
    "refused, naming every unsupported node. A batch (batch_size B) is written as OUT-1 ... "
    "OUT-B.\n"
    "\n"
    "  -o GRAPH.pbtxt     where to write the graph file\n"
    "  --input-dir DIR    where LoadImage's file names are found (default: the workflow's folder)\n"
    "  --overwrite        replace GRAPH.pbtxt if it exists\n";

// One input file and a new -o: OK, or the usage error to exit with (after saying why).
int OneInOneOut(const std::string& name, const Args& args, const std::string& expected,
                std::string* out) {
  *out = OutputFlag(args);
  if (args.positionals().size() != 1 || out->empty())
    return UsageError(name, "expected " + expected);
  std::error_code ec;
  if (!args.Has("overwrite") && fs::exists(*out, ec)) {
    return UsageError(name, absl::StrCat(*out, " exists (--overwrite replaces it)"));
  }
  return kExitOk;
}

// A file the workflow names: in ComfyUI's models folder (DIR/SUB/NAME, DIR/NAME), beside the
// workflow, or as given.
absl::StatusOr<std::string> FindModelFile(const std::string& name, const std::string& sub,
                                          const std::string& what, const std::string& workflow,
                                          const Args& args) {
  std::vector<std::string> tried;
  if (auto dir = args.Get("comfy-models")) {
    tried.push_back((fs::path(*dir) / sub / name).string());
    tried.push_back((fs::path(*dir) / name).string());
  }
  tried.push_back((fs::path(workflow).parent_path() / name).string());
  tried.push_back(name);
  for (const std::string& p : tried) {
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) return p;
  }
  // The project's own model, wherever it is installed (the example workflows name it).
  if (name == kDemoModelFile && !DemoModelPath().empty()) return DemoModelPath();
  return absl::NotFoundError(absl::StrCat(
      "the workflow's ", what, " '", name, "' was not found (looked for ",
      absl::StrJoin(tried, ", "), "); pass --comfy-models DIR (ComfyUI's models folder)",
      what == "checkpoint" ? " or --model FILE" : ""));
}

}  // namespace

absl::StatusOr<ComfyRun> PrepareComfyRun(const std::string& path, const Args& args) {
  const bool remote = args.Has("workers");  // names in the workers' repositories
  auto find = [&](const std::string& name, const std::string& sub, const std::string& what) {
    return remote ? absl::StatusOr<std::string>(name) : FindModelFile(name, sub, what, path, args);
  };
  ComfyImportOptions options;
  options.input_dir = args.GetOr("input-dir", "");
  // LoRAs that only some samplers or encoders use become ApplyLora nodes naming their files.
  options.lora_file = [&](const std::string& name) { return find(name, "loras", "LoRA"); };
  auto imported = ImportComfyWorkflow(path, options);
  if (!imported.ok()) return imported.status();
  ComfyRun run;
  run.graph_text = imported->text;
  const ComfyModel& m = imported->model;
  if (!args.Has("model")) {
    auto p = find(m.checkpoint, "checkpoints", "checkpoint");
    if (!p.ok()) return p.status();
    run.model = *p;
  }
  if (!m.vae.empty() && !args.Has("vae")) {
    auto p = find(m.vae, "vae", "VAE");
    if (!p.ok()) return p.status();
    run.vae = *p;
  }
  if (auto dir = args.Get("comfy-models")) {  // for `embedding:NAME` in prompts
    std::error_code ec;
    if (fs::is_directory(fs::path(*dir) / "embeddings", ec))
      run.embeddings_dir = (fs::path(*dir) / "embeddings").string();
  }
  for (const ComfyLora& l : m.loras) {
    auto p = find(l.name, "loras", "LoRA");
    if (!p.ok()) return p.status();
    run.loras.push_back(absl::StrCat(*p, ":", l.unet, ":", l.text));
  }
  for (const std::string& c : m.controlnets) {
    auto p = find(c, "controlnet", "ControlNet");
    if (!p.ok()) return p.status();
    run.controlnets.push_back(*p);
  }
  return run;
}

constexpr char kExportHelp[] =
    "usage: sd-graph export-comfy GRAPH.pbtxt -o WORKFLOW.json [--checkpoint NAME] [--overwrite]\n"
    "\n"
    "Writes a graph as a ComfyUI workflow in its API format (ComfyUI: Load, or POST it to "
    "/prompt), for\n"
    "graphs made of kinds that have a ComfyUI equivalent: ComfyUI's samplers (SigmaSchedule, "
    "SigmaStart,\n"
    "SigmaStep, SigmaEnd), comfy-weighted prompts, EmptyLatent, VaeDecode/VaeEncode, LoadImage,\n"
    "LatentUpscale, ImageScale, the mask nodes... (what import-comfy writes). Widget values are "
    "the graph\n"
    "inputs' defaults. Anything else is refused, naming every node without an equivalent; the "
    "stock graphs\n"
    "use the reference implementation's samplers, which ComfyUI does not have.\n"
    "\n"
    "  -o WORKFLOW.json    where to write it\n"
    "  --checkpoint NAME   the CheckpointLoaderSimple's ckpt_name (default model.safetensors)\n"
    "  --controlnets A,B   the ControlNetLoaders' control_net_name, by the ControlNet nodes' "
    "index\n"
    "  --overwrite         replace WORKFLOW.json if it exists\n";

int ExportComfyCommand(const std::vector<std::string>& argv) {
  int code = kExitOk;
  auto args = ParseCommandLine("export-comfy", argv,
                               {{"o", "output", "checkpoint", "controlnets"}, {"overwrite"}},
                               kExportHelp, &code);
  if (!args) return code;
  std::string out;
  if (int c = OneInOneOut("export-comfy", *args, "one GRAPH.pbtxt and -o WORKFLOW.json", &out);
      c != kExitOk)
    return c;
  StockNodeKinds();
  ImageNodeKinds();
  auto graph = Graph::Load(args->positionals()[0]);
  if (!graph.ok()) return FailWithCode("export-comfy", graph.status());
  ComfyExportOptions options;
  options.checkpoint = args->GetOr("checkpoint", options.checkpoint);
  for (absl::string_view c : absl::StrSplit(args->GetOr("controlnets", ""), ',', absl::SkipEmpty()))
    options.controlnets.emplace_back(c);
  auto json = ExportComfyWorkflow(graph->config(), args->positionals()[0], options);
  if (!json.ok()) return FailWithCode("export-comfy", json.status());
  if (absl::Status s = WriteWholeFile(out, *json, "workflow"); !s.ok())
    return FailWithCode("export-comfy", s);
  std::fprintf(stderr, "sd-graph export-comfy: wrote %s\n", out.c_str());
  return kExitOk;
}

int ImportComfyCommand(const std::vector<std::string>& argv) {
  int code = kExitOk;
  auto args = ParseCommandLine("import-comfy", argv, {{"o", "output", "input-dir"}, {"overwrite"}},
                               kHelp, &code);
  if (!args) return code;
  std::string out;
  if (int c = OneInOneOut("import-comfy", *args,
                          "one WORKFLOW.json or IMAGE.png and -o GRAPH.pbtxt", &out);
      c != kExitOk)
    return c;
  const std::string& path = args->positionals()[0];
  auto graph = ImportComfyWorkflow(path, {args->GetOr("input-dir", "")});
  if (!graph.ok()) return FailWithCode("import-comfy", graph.status());
  StockNodeKinds();  // the translation is checked like any graph file before it is written
  ImageNodeKinds();
  if (auto g = Graph::FromText(graph->text, path); !g.ok())
    return FailWithCode("import-comfy", g.status());
  if (absl::Status s = WriteWholeFile(out, graph->text, "graph file"); !s.ok())
    return FailWithCode("import-comfy", s);
  std::fprintf(stderr, "sd-graph import-comfy: wrote %s (checkpoint '%s')\n", out.c_str(),
               graph->model.checkpoint.c_str());
  return kExitOk;
}

}  // namespace sd::cli

#include "host_plugin/cli/render_jobs.h"

#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "host_plugin/cli/image_io.h"
#include "nodes/base/status_macros.h"
#include "nodes/ops/model_cache.h"
#include "nodes/ops/prompt_tokens.h"
#include "nodes/weights/safetensors.h"
#include "nodes/weights/torch_tensors.h"

namespace sd::cli {
namespace {

class ProgressPrinter {
 public:
  explicit ProgressPrinter(int image, int images)
      : tty_(::isatty(2)), image_(image), images_(images) {}
  void operator()(const Progress& p) {
    if (p.step == 0 || p.step == last_) return;
    last_ = p.step;
    const std::string prefix =
        images_ > 1 ? absl::StrCat("image ", image_ + 1, "/", images_, " ") : "";
    if (tty_) {
      const int width = 30, filled = p.steps ? p.step * width / p.steps : 0;
      std::fprintf(stderr, "\r%s[%s%s] step %d/%d  %.1fs ", prefix.c_str(),
                   std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(),
                   p.step, p.steps, p.elapsed_s);
    } else {
      std::fprintf(stderr, "%sstep %d/%d (%.1fs)\n", prefix.c_str(), p.step, p.steps, p.elapsed_s);
    }
    std::fflush(stderr);
  }
  void Done() {
    if (tty_ && last_ > 0) std::fputc('\n', stderr);
  }

 private:
  bool tty_;
  int image_, images_;
  int last_ = 0;
};

// The parameters line other SD tools write and read (A1111 style), so an image can be reproduced:
// the prompt, negative prompt, steps, sampler, CFG scale, seed, size, model hash and name, and the
// denoising strength where the graph has one.
std::string ParametersLine(const ImageJobs& r, const std::map<std::string, Value>& inputs,
                           int64_t width, int64_t height, const std::string& ti_hashes,
                           const ImageJobs::ModelParts& used) {
  const Mode mode = r.mode;
  const Graph& graph = *r.graph;
  auto text = [&](const char* key, const std::string& fallback) {
    auto it = inputs.find(key);
    if (it != inputs.end() && std::holds_alternative<std::string>(it->second))
      return std::get<std::string>(it->second);
    const v1::GraphInput* in = graph.Input(key);  // the graph's own default
    if (in && in->default_value().kind_case() == v1::Value::kS) return in->default_value().s();
    return fallback;
  };
  auto number = [&](const char* key) -> std::string {
    auto it = inputs.find(key);
    if (it != inputs.end() && std::holds_alternative<int64_t>(it->second))
      return std::to_string(std::get<int64_t>(it->second));
    if (it != inputs.end() && std::holds_alternative<double>(it->second))
      return absl::StrFormat("%g", std::get<double>(it->second));
    const v1::GraphInput* in = graph.Input(key);
    if (!in) return "";
    if (in->default_value().kind_case() == v1::Value::kI)
      return std::to_string(in->default_value().i());
    if (in->default_value().kind_case() == v1::Value::kF)
      return absl::StrFormat("%g", in->default_value().f());
    return "";
  };
  std::string params = absl::StrCat(
      text("prompt", ""), "\nNegative prompt: ", text("negative", ""), "\nSteps: ", number("steps"),
      ", Sampler: ",
      SamplerLabel(text("sampler", "ddpm"),
                   number("karras") == "1" || text("scheduler", "") == "karras"),
      ", CFG scale: ", number("cfg"), ", Seed: ", number("seed"), ", Size: ", width, "x", height,
      ", Model hash: ", r.model_hash.substr(0, 10), ", Model: ", Basename(r.model));
  if (!used.vae.empty()) {
    absl::StrAppend(&params, ", VAE hash: ", used.vae_hash.substr(0, 10),
                    ", VAE: ", Basename(used.vae));
  }
  if (graph.Input("hires_scale")) {  // as AUTOMATIC1111 writes its hires fix
    absl::StrAppend(&params, ", Denoising strength: ", number("hires_denoise"),
                    ", Hires upscale: ", number("hires_scale"),
                    ", Hires steps: ", number("hires_steps"), ", Hires upscaler: Latent (",
                    text("upscale_method", "bilinear"), ")");
  }
  if (mode == Mode::kImg2Img || (mode == Mode::kInpaint && graph.Input("strength"))) {
    absl::StrAppend(&params, ", Denoising strength: ", number("strength"));
  }
  if (const std::string skip = number("clip_skip"); !skip.empty() && skip != "1")
    absl::StrAppend(&params, ", Clip skip: ", skip);
  if (const std::string w = text("weighting", "a1111"); w != "a1111" && !w.empty())
    absl::StrAppend(&params, ", Prompt weighting: ", w);
  if (!used.loras.empty())
    absl::StrAppend(&params, ", Lora hashes: \"", absl::StrJoin(used.loras, ", "), "\"");
  if (!ti_hashes.empty()) absl::StrAppend(&params, ", TI hashes: \"", ti_hashes, "\"");
  if (!r.controlnets.empty()) absl::StrAppend(&params, ", ", r.controlnets);
  return params;
}

// The job's graph as a ComfyUI workflow with its input values, or "" when the graph has kinds
// ComfyUI has no equivalent for (the stock graphs).
std::string EmbeddedWorkflow(const ImageJobs& r, const std::map<std::string, Value>& inputs) {
  v1::GraphConfig config = r.graph->config();
  for (v1::GraphInput& in : *config.mutable_input()) {
    auto it = inputs.find(in.name());
    if (it == inputs.end()) continue;
    if (const auto* s = std::get_if<std::string>(&it->second))
      in.mutable_default_value()->set_s(*s);
    if (const auto* i = std::get_if<int64_t>(&it->second)) in.mutable_default_value()->set_i(*i);
    if (const auto* f = std::get_if<double>(&it->second)) in.mutable_default_value()->set_f(*f);
  }
  auto json = ExportComfyWorkflow(config, r.graph->name(), r.comfy);
  return json.ok() ? *json : "";
}

// The textual-inversion embeddings the job's prompts use, as `TI hashes` lists them. An embedding
// made for another text encoder is refused here, naming its file, before anything runs (on workers
// too: they report their text encoder's width).
absl::StatusOr<std::string> EmbeddingsUsed(const ImageJobs& r,
                                           const std::map<std::string, Value>& inputs) {
  if (r.ctx->embeddings_dir.empty()) return std::string();
  SD_ASSIGN_OR_RETURN(auto tokenizer, r.ctx->models->Tokenizer(r.ctx->tokenizer_dir));
  SD_ASSIGN_OR_RETURN(auto library, r.ctx->models->Embeddings(r.ctx->embeddings_dir));
  auto text = [&](const char* key) {
    auto it = inputs.find(key);
    return it != inputs.end() && std::holds_alternative<std::string>(it->second)
               ? std::get<std::string>(it->second)
               : std::string();
  };
  SD_ASSIGN_OR_RETURN(PromptWeighting mode, ParsePromptWeighting(text("weighting")));
  std::vector<std::shared_ptr<const Embedding>> used;
  for (const char* key : {"prompt", "negative"}) {
    SD_ASSIGN_OR_RETURN(PreparedPrompt p,
                        PreparePrompt(text(key), mode, *tokenizer, library.get()));
    for (auto& e : p.embeddings) {
      if (std::none_of(used.begin(), used.end(), [&](const auto& u) { return u->name == e->name; }))
        used.push_back(e);
    }
  }
  for (const auto& e : used) {
    if (r.text_width > 0 && e->vectors.size(1) != r.text_width) {
      return absl::InvalidArgumentError(
          absl::StrCat("embedding ", e->path, " has vectors of width ", e->vectors.size(1), "; ",
                       r.ctx->checkpoint, "'s text encoder takes ", r.text_width,
                       " (an embedding made for another model, e.g. SD 2.x?)"));
    }
  }
  return EmbeddingHashes(used);
}

// --dump NODE.PORT=FILE: the captured tensors of image `b` of `batch`, each into its own file.
absl::Status WriteDumps(const std::map<std::string, Value>& result,
                        const std::vector<std::pair<std::string, std::string>>& dump_targets, int b,
                        int batch) {
  for (const auto& [source, file] : dump_targets) {
    auto it = result.find(source);
    if (it == result.end() || !std::holds_alternative<torch::Tensor>(it->second)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--dump ", source, ": no tensor was produced there"));
    }
    SD_ASSIGN_OR_RETURN(TensorToWrite w,
                        ToWrite(source, std::get<torch::Tensor>(it->second).contiguous()));
    SD_RETURN_IF_ERROR(WriteSafetensors(NumberedOutput(file, b, batch), {w}));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RenderImage(const ImageJobs& r, int b) {
  std::map<std::string, Value> job_inputs = r.inputs;
  RunOptions job_options = r.options;
  // In-process jobs run one after another: the last one frees each network once it is done with it.
  job_options.release_models = !r.remote && b == r.jobs - 1;
  std::string path = NumberedOutput(r.out, b, static_cast<int>(r.batch));
  if (r.farm) {
    const int64_t frame = r.frames[b];
    path = *FramePath(r.out, frame);
    if (!r.overwrite && std::ifstream(path).good()) {
      std::printf("openjd_status: frame %lld exists, skipped (%s)\n", static_cast<long long>(frame),
                  path.c_str());
      std::fflush(stdout);
      return absl::OkStatus();
    }
    for (const std::string& kv : r.sets) {
      const size_t eq = kv.find('=');
      if (kv.find("{frame}", eq) == std::string::npos) continue;
      auto v = r.graph->ParseInputValue(
          kv.substr(0, eq), ReplaceAll(kv.substr(eq + 1), "{frame}", std::to_string(frame)));
      if (!v.ok()) return v.status();
      job_inputs[kv.substr(0, eq)] = *v;
    }
    if (r.graph->Input("seed")) job_inputs["seed"] = r.seed + frame;
    std::printf("openjd_status: rendering frame %lld -> %s\n", static_cast<long long>(frame),
                path.c_str());
    std::fflush(stdout);
  } else if ((r.mode != Mode::kRun || r.seed_given) && r.graph->Input("seed")) {
    job_inputs["seed"] = r.seed + b;
  }
  ProgressPrinter progress(b, r.jobs);
  job_options.on_progress = [&](const Progress& p) {
    std::lock_guard<std::mutex> lock(*r.print_mu);
    progress(p);
    if (r.farm && p.steps > 0) {
      const int pct =
          static_cast<int>(100.0 * (b + static_cast<double>(p.step) / p.steps) / r.jobs);
      std::printf("openjd_progress: %d\nProgress: %d%%\n", pct, pct);
      std::fflush(stdout);
    }
  };
  SD_ASSIGN_OR_RETURN(const std::string ti_hashes, EmbeddingsUsed(r, job_inputs));
  // The model parts the image records: the run's, and those of the models its nodes use.
  ImageJobs::ModelParts used = r.model_parts;
  if (r.parts_of) {
    job_options.on_models = [&](const std::set<std::string>& models) -> absl::Status {
      for (const std::string& model : models) {
        SD_ASSIGN_OR_RETURN(const ImageJobs::ModelParts parts, r.parts_of(model));
        for (const std::string& e : parts.loras) {
          if (std::find(used.loras.begin(), used.loras.end(), e) == used.loras.end())
            used.loras.push_back(e);
        }
        if (used.vae.empty()) {
          used.vae = parts.vae;
          used.vae_hash = parts.vae_hash;
        }
      }
      return absl::OkStatus();
    };
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto result = r.graph->Run(job_inputs, *r.ctx, job_options);
  {
    std::lock_guard<std::mutex> lock(*r.print_mu);
    progress.Done();
  }
  if (!result.ok()) return result.status();
  const std::string first_output = r.graph->config().output(0).name();
  const Value& image = result->at(first_output);
  if (!std::holds_alternative<torch::Tensor>(image)) {
    return absl::InvalidArgumentError(
        absl::StrCat("graph output '", first_output, "' is not an image"));
  }
  // One image [H, W, 3], or a batch [B, H, W, 3] (ComfyUI's SaveImage): OUT-1.png ... OUT-B.png.
  const torch::Tensor& out = std::get<torch::Tensor>(image);
  const std::vector<torch::Tensor> images =
      out.dim() == 4 ? out.unbind(0) : std::vector<torch::Tensor>{out};
  const std::string workflow = EmbeddedWorkflow(r, job_inputs);
  for (size_t i = 0; i < images.size(); ++i) {
    const torch::Tensor& px = images[i];
    const std::string params =
        ParametersLine(r, job_inputs, px.size(1), px.size(0), ti_hashes, used);
    if (r.options.cancelled && r.options.cancelled->load())
      return absl::CancelledError("cancelled before writing " + path);
    const std::string file =
        NumberedOutput(path, static_cast<int>(i), static_cast<int>(images.size()));
    std::map<std::string, std::string> meta = {{"parameters", params}, {"Software", "sdgraph"}};
    if (!workflow.empty()) meta["prompt"] = workflow;
    SD_RETURN_IF_ERROR(WriteImageRgb8(file, px.contiguous(), meta));
  }
  if (images.size() > 1) path = NumberedOutput(path, 0, static_cast<int>(images.size())) + " ...";
  SD_RETURN_IF_ERROR(WriteDumps(*result, r.dump_targets, b, static_cast<int>(r.batch)));
  std::lock_guard<std::mutex> lock(*r.print_mu);
  std::fprintf(stderr, "sd-graph %s: wrote %s (%.1f s)\n", r.name.c_str(), path.c_str(),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return absl::OkStatus();
}

absl::Status RunJobs(int jobs, int parallel, const std::function<absl::Status(int)>& job) {
  if (parallel <= 1) {
    for (int b = 0; b < jobs; ++b) SD_RETURN_IF_ERROR(job(b));
    return absl::OkStatus();
  }
  std::atomic<int> next{0};
  std::mutex error_mu;
  absl::Status first_error;
  std::atomic<bool> failed{false};
  std::vector<std::thread> runners;
  for (int t = 0; t < parallel; ++t) {
    runners.emplace_back([&] {
      for (int b = next++; b < jobs && !failed.load(); b = next++) {
        absl::Status s = job(b);
        if (!s.ok()) {
          std::lock_guard<std::mutex> lock(error_mu);
          if (first_error.ok()) first_error = s;
          failed.store(true);
        }
      }
    });
  }
  for (std::thread& t : runners) t.join();
  return first_error;
}

}  // namespace sd::cli

#include "tools/train/trainer.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nodes/base/exception_status.h"
#include "nodes/base/status_macros.h"
#include "nodes/schedulers/sampler.h"
#include "nodes/text/clip_tokenizer.h"
#include "nodes/weights/checkpoint.h"
#include "tools/train/caption_heads.h"
#include "tools/train/shapes_dataset.h"
#include "tools/train/train_setup.h"
#include "tools/train/train_state.h"
#include "tools/train/train_util.h"

namespace sd::train {
namespace {

struct Batch {
  torch::Tensor images;  // [B, 3, S, S] in [-1, 1]
  std::vector<std::string> captions;
  std::vector<demo::Stated> stated;  // what each caption states
};

// A batch's token ids, with what each caption states after the empty-prompt drop and the row of
// its end token (the caption heads' first row).
struct TextBatch {
  torch::Tensor ids, stated, first_rows;
};

Batch DrawBatch(demo::ShapesDataset& data, int count) {
  const int size = data.size();
  Batch b;
  b.images = torch::empty({count, size, size, 3}, torch::kUInt8);
  for (int i = 0; i < count; ++i) {
    demo::ShapeSample s = data.Next();
    std::memcpy(b.images[i].data_ptr(), s.rgb.data(), s.rgb.size());
    b.captions.push_back(std::move(s.caption));
    b.stated.push_back(demo::StatedBy(s.scene, s.mentions));
  }
  b.images = b.images.permute({0, 3, 1, 2}).to(torch::kFloat32).div_(127.5).sub_(1.0).contiguous();
  return b;
}

// Mean absolute difference of two pictures' neighbour differences, across and down: the edges'
// part of a reconstruction loss that the flat areas otherwise dominate (a blurred corner costs
// little L1 or L2 but much here).
torch::Tensor EdgeL1(const torch::Tensor& a, const torch::Tensor& b) {
  auto across = [](const torch::Tensor& t) { return t.slice(3, 1) - t.slice(3, 0, -1); };
  auto down = [](const torch::Tensor& t) { return t.slice(2, 1) - t.slice(2, 0, -1); };
  return (across(a) - across(b)).abs().mean() + (down(a) - down(b)).abs().mean();
}

class Trainer {
 public:
  Trainer(const TrainOptions& o, const SdConfig& config, std::unique_ptr<ClipTokenizer> tok)
      : o_(o),
        m_(config),
        tokenizer_(std::move(tok)),
        vae_opt_(m_.vae->parameters(), torch::optim::AdamWOptions(o.vae_lr).weight_decay(0.0)),
        diff_opt_(DiffusionParams(m_),
                  torch::optim::AdamWOptions(o.diffusion_lr).weight_decay(0.01)),
        dec_opt_(DecoderParams(), torch::optim::AdamWOptions(o.decoder_lr).weight_decay(0.0)),
        heads_(config.clip.width),
        heads_opt_(heads_->parameters(),
                   torch::optim::AdamWOptions(o.diffusion_lr).weight_decay(0.0)) {}

  absl::Status Run();

 private:
  absl::Status Save();
  absl::Status Export();
  void Log(const char* phase, int64_t step, int64_t total, double loss, const std::string& extra);
  double VaeStep(int64_t step, double* kl_out);
  double DiffusionStep(int64_t step, double* heads_out);
  double DecoderStep(int64_t step);
  void FillPool(int64_t chunk);
  absl::Status RescaleLatents();
  TextBatch Tokens(const std::vector<std::string>& captions,
                   const std::vector<demo::Stated>& stated, std::mt19937_64& rng);
  bool ShouldStop() const {
    return StopRequested() || (o_.max_minutes > 0 && Since(run_start_) > o_.max_minutes * 60) ||
           (o_.stop_after_steps > 0 && steps_this_run_ >= o_.stop_after_steps);
  }

  TrainOptions o_;
  Models m_;
  std::unique_ptr<ClipTokenizer> tokenizer_;
  torch::optim::AdamW vae_opt_, diff_opt_, dec_opt_;
  CaptionHeads heads_;  // trained only with caption_loss_weight > 0; never exported
  torch::optim::AdamW heads_opt_;
  NamedOptimizers Optimizers() {
    return {{"vae_opt", &vae_opt_},
            {"diff_opt", &diff_opt_},
            {"dec_opt", &dec_opt_},
            {"heads_opt", &heads_opt_}};
  }
  NamedModules Aids() { return {{"caption_heads", heads_.get()}}; }
  std::vector<torch::Tensor> DecoderParams() {
    std::vector<torch::Tensor> p;
    for (const auto& kv : m_.vae->named_parameters()) {
      if (kv.key().rfind("decoder.", 0) == 0 || kv.key().rfind("post_quant_conv.", 0) == 0)
        p.push_back(kv.value());
    }
    return p;
  }
  Ema ema_;
  Progress progress_;
  Clock::time_point run_start_ = Clock::now(), last_save_ = Clock::now(),
                    window_start_ = Clock::now();
  double window_loss_ = 0;
  int window_steps_ = 0;
  std::ofstream losses_;
  static constexpr int kPoolReuse = 4;
  int64_t steps_this_run_ = 0;
  int64_t pool_chunk_ = -1;
  torch::Tensor pool_moments_;
  std::vector<std::string> pool_captions_;
  std::vector<demo::Stated> pool_stated_;
};

TextBatch Trainer::Tokens(const std::vector<std::string>& captions,
                          const std::vector<demo::Stated>& stated, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(0, 1);
  const int64_t n = static_cast<int64_t>(captions.size());
  TextBatch out;
  out.ids = torch::empty({n, ClipTokenizer::kContextLength}, torch::kInt64);
  out.first_rows = torch::empty({n}, torch::kInt64);
  std::vector<demo::Stated> kept = stated;
  for (int64_t i = 0; i < n; ++i) {
    const size_t k = static_cast<size_t>(i);
    const bool drop = u(rng) < o_.uncond_fraction;
    const Tokenized t = tokenizer_->Encode(drop ? std::string() : captions[k]);
    if (drop) kept[k] = demo::StatedByNothing();
    std::memcpy(out.ids[i].data_ptr(), t.ids.data(), t.ids.size() * sizeof(int64_t));
    out.first_rows[i] = 1 + t.prompt_tokens - t.truncated;
  }
  out.stated = StatedTensor(kept);
  return out;
}

// The decoder alone, the encoder frozen (its latents, which the UNet learnt, stay as they are):
// sharper reconstructions, as SD's own fine-tuned decoders were made.
double Trainer::DecoderStep(int64_t step) {
  const uint64_t seed = StepSeed(o_.seed, 5, step);
  torch::manual_seed(seed);
  demo::ShapesDataset data(seed, o_.size);
  const Batch b = DrawBatch(data, o_.vae_batch);
  torch::Tensor z;
  {
    torch::NoGradGuard no_grad;
    z = Posterior(m_.vae->EncodeMoments(b.images), m_.config.vae.embed_dim).Sample();
  }
  const torch::Tensor decoded = m_.vae->DecodeUnscaled(z);
  const torch::Tensor diff = decoded - b.images;
  const torch::Tensor rec = diff.abs().mean() + diff.pow(2).mean();
  const torch::Tensor loss =
      o_.decoder_edge_weight > 0 ? rec + o_.decoder_edge_weight * EdgeL1(decoded, b.images) : rec;
  SetLearningRate(dec_opt_, LearningRate(o_.decoder_lr, step, o_.decoder_steps, o_.warmup_steps));
  dec_opt_.zero_grad();
  loss.backward();
  torch::nn::utils::clip_grad_norm_(DecoderParams(), 1.0);
  dec_opt_.step();
  return rec.item<double>();
}

double Trainer::VaeStep(int64_t step, double* kl_out) {
  const uint64_t seed = StepSeed(o_.seed, 1, step);
  torch::manual_seed(seed);
  demo::ShapesDataset data(seed, o_.size);
  const Batch b = DrawBatch(data, o_.vae_batch);
  const Posterior q(m_.vae->EncodeMoments(b.images), m_.config.vae.embed_dim);
  const torch::Tensor diff = m_.vae->DecodeUnscaled(q.Sample()) - b.images;
  const torch::Tensor rec = diff.abs().mean() + diff.pow(2).mean();
  const torch::Tensor kl =
      0.5 * (q.mean.pow(2) + q.logvar.exp() - 1.0 - q.logvar).sum({1, 2, 3}).mean();
  const torch::Tensor loss = rec + o_.kl_weight * kl;
  SetLearningRate(vae_opt_, LearningRate(o_.vae_lr, step, o_.vae_steps, o_.warmup_steps));
  vae_opt_.zero_grad();
  loss.backward();
  torch::nn::utils::clip_grad_norm_(m_.vae->parameters(), 1.0);
  vae_opt_.step();
  *kl_out = kl.item<double>();
  return rec.item<double>();
}

void Trainer::FillPool(int64_t chunk) {
  if (pool_chunk_ == chunk) return;
  torch::NoGradGuard no_grad;
  const uint64_t seed = StepSeed(o_.seed, 4, chunk);
  demo::ShapesDataset data(seed, o_.size);
  std::vector<torch::Tensor> moments;
  pool_captions_.clear();
  pool_stated_.clear();
  constexpr int kEncodeBatch = 64;
  for (int done = 0; done < o_.pool_size; done += kEncodeBatch) {
    const Batch b = DrawBatch(data, std::min(kEncodeBatch, o_.pool_size - done));
    moments.push_back(m_.vae->EncodeMoments(b.images));
    pool_captions_.insert(pool_captions_.end(), b.captions.begin(), b.captions.end());
    pool_stated_.insert(pool_stated_.end(), b.stated.begin(), b.stated.end());
  }
  pool_moments_ = torch::cat(moments, 0);
  pool_chunk_ = chunk;
}

double Trainer::DiffusionStep(int64_t step, double* heads_out) {
  const uint64_t seed = StepSeed(o_.seed, 2, step);
  const int64_t n = o_.diffusion_batch;
  // Pictures come from a pool of encoded ones, each used kPoolReuse times on average (encoding
  // costs more than a UNet step); the posterior sample, the timestep, the noise and the caption
  // drop are fresh.
  FillPool(step * n / (o_.pool_size * kPoolReuse));
  torch::manual_seed(seed);
  std::mt19937_64 rng(seed);
  const torch::Tensor pick = torch::randint(0, o_.pool_size, {n}, torch::kInt64);
  std::vector<std::string> captions;
  std::vector<demo::Stated> stated;
  for (int64_t i = 0; i < n; ++i) {
    const size_t k = static_cast<size_t>(pick[i].item<int64_t>());
    captions.push_back(pool_captions_[k]);
    stated.push_back(pool_stated_[k]);
  }
  torch::Tensor x0;
  {
    torch::NoGradGuard no_grad;
    x0 = Posterior(pool_moments_.index_select(0, pick), m_.config.vae.embed_dim).Sample() *
         m_.config.vae.scale_factor;
  }
  const NoiseSchedule& schedule = NoiseSchedule::StableDiffusion();
  const int64_t high = static_cast<int64_t>(std::llround(o_.high_t_fraction * n));
  const int64_t steps = schedule.train_steps(), noisiest = steps - steps * 3 / 10;
  const torch::Tensor t = torch::cat({torch::randint(noisiest, steps, {high}, torch::kInt64),
                                      torch::randint(0, steps, {n - high}, torch::kInt64)});
  const torch::Tensor abar = schedule.alphas_cumprod.index_select(0, t).view({n, 1, 1, 1});
  const torch::Tensor eps = torch::randn_like(x0);
  const torch::Tensor xt = abar.sqrt() * x0 + (1.0 - abar).sqrt() * eps;
  const TextBatch text = Tokens(captions, stated, rng);
  const torch::Tensor context = m_.clip->forward(text.ids);
  const torch::Tensor per_sample = (m_.unet->forward(xt, t, context) - eps).pow(2).mean({1, 2, 3});
  const torch::Tensor weight = ((1.0 - abar) / abar).view({n}).clamp(1.0, o_.x0_weight_cap);
  const torch::Tensor eps_loss = (per_sample * weight).sum() / weight.sum();
  const bool heads = o_.caption_loss_weight > 0;
  const torch::Tensor heads_loss =
      heads ? heads_->Loss(context, text.stated, text.first_rows) : torch::zeros({});
  const double lr = LearningRate(o_.diffusion_lr, step, o_.diffusion_steps, o_.warmup_steps);
  SetLearningRate(diff_opt_, lr);
  SetLearningRate(heads_opt_, lr);
  diff_opt_.zero_grad();
  heads_opt_.zero_grad();
  (eps_loss + o_.caption_loss_weight * heads_loss).backward();
  torch::nn::utils::clip_grad_norm_(DiffusionParams(m_), 1.0);
  diff_opt_.step();
  if (heads) heads_opt_.step();
  ema_.Update(o_.ema_decay);
  *heads_out = heads_loss.item<double>();
  return eps_loss.item<double>();
}

absl::Status Trainer::RescaleLatents() {
  torch::NoGradGuard no_grad;
  torch::manual_seed(StepSeed(o_.seed, 3, 0));
  demo::ShapesDataset data(StepSeed(o_.seed, 3, 0), o_.size);
  const Batch b = DrawBatch(data, 256);
  const torch::Tensor z =
      Posterior(m_.vae->EncodeMoments(b.images), m_.config.vae.embed_dim).Sample();
  const double std = z.std().item<double>();
  if (!(std > 1e-6) || !std::isfinite(std))
    return absl::InternalError(absl::StrCat("VAE latents have std ", std));
  const double factor = 1.0 / (m_.config.vae.scale_factor * std);
  FoldLatentScale(m_.vae, factor);
  std::printf(
      "[vae] latents had std %.4f; folded x%.4f into quant_conv/post_quant_conv so latents * %.5f "
      "have std 1\n",
      std, factor, m_.config.vae.scale_factor);
  progress_.vae_rescaled = true;
  return absl::OkStatus();
}

void Trainer::Log(const char* phase, int64_t step, int64_t total, double loss,
                  const std::string& extra) {
  losses_ << phase << '\t' << step << '\t' << loss << '\n';
  window_loss_ += loss;
  ++window_steps_;
  if ((step + 1) % o_.log_every != 0 && step + 1 != total) return;
  const double per_step = Since(window_start_) / window_steps_;
  std::printf("[%s] step %lld/%lld  loss %.5f%s  %.2f s/step  ETA %s\n", phase,
              static_cast<long long>(step + 1), static_cast<long long>(total),
              window_loss_ / window_steps_, extra.c_str(), per_step,
              Duration(per_step * static_cast<double>(total - step - 1)).c_str());
  std::fflush(stdout);
  losses_.flush();
  window_loss_ = 0;
  window_steps_ = 0;
  window_start_ = Clock::now();
}

// A run that went on from another model's weights records that model's recipe, steps and training
// time before its own, so the shipped file says everything it took to make it.
void ChainRecipe(const std::string& init_from, std::map<std::string, std::string>& metadata) {
  std::string before = absl::StrCat("start from ", init_from);
  double seconds = 0;
  if (auto ckpt = Checkpoint::Open(init_from); ckpt.ok()) {
    const auto& prior = (*ckpt)->metadata();
    if (auto it = prior.find("sdgraph.recipe"); it != prior.end()) before = it->second;
    if (auto it = prior.find("sdgraph.train_steps"); it != prior.end())
      metadata["sdgraph.train_steps"] =
          absl::StrCat(it->second, "; then ", metadata["sdgraph.train_steps"]);
    if (auto it = prior.find("sdgraph.train_seconds");
        it != prior.end() && !absl::SimpleAtod(it->second, &seconds))
      seconds = 0;
  }
  metadata["sdgraph.recipe"] =
      absl::StrCat(before, "; then (from that model's weights) ", metadata["sdgraph.recipe"]);
  double own = 0;
  if (absl::SimpleAtod(metadata["sdgraph.train_seconds"], &own))
    metadata["sdgraph.train_seconds"] = absl::StrFormat("%.0f", own + seconds);
}

absl::Status Trainer::Save() {
  progress_.seconds += Since(last_save_);
  last_save_ = Clock::now();
  return SaveState(o_.out_dir + "/state.pt", m_, ema_, Optimizers(), progress_, Aids());
}

absl::Status Trainer::Run() {
  torch::manual_seed(o_.seed);
  InitForTraining(*m_.clip, false);
  InitForTraining(*m_.vae, false);
  InitForTraining(*m_.unet, true);
  InitForTraining(*heads_, false);
  const std::string state = o_.out_dir + "/state.pt";
  if (!o_.init_from.empty() && !std::filesystem::exists(state)) {
    if (absl::Status s = InitFromCheckpoint(o_.init_from, m_); !s.ok()) return s;
    // A model from sd-train has its VAE trained and its latents rescaled: go on with the diffusion
    // phase.
    progress_.vae_step = o_.vae_steps;
    progress_.vae_rescaled = true;
    std::printf("starting from the weights of %s (VAE as trained)\n", o_.init_from.c_str());
  }
  ema_.Reset(DiffusionParams(m_));
  if (std::filesystem::exists(state)) {
    if (absl::Status s = LoadState(state, m_, ema_, Optimizers(), progress_, Aids()); !s.ok())
      return s;
    std::printf("resuming from %s: VAE step %lld, diffusion step %lld, %s trained so far\n",
                state.c_str(), static_cast<long long>(progress_.vae_step),
                static_cast<long long>(progress_.diffusion_step),
                Duration(progress_.seconds).c_str());
  }
  if (o_.export_now) return Export();
  losses_.open(o_.out_dir + "/losses.tsv", std::ios::app);
  auto checkpoint = [&]() -> absl::Status {
    if (Since(last_save_) < o_.save_every_s) return absl::OkStatus();
    return Save();
  };
  for (; progress_.vae_step < o_.vae_steps && !ShouldStop();
       ++progress_.vae_step, ++steps_this_run_) {
    double kl = 0;
    const double rec = VaeStep(progress_.vae_step, &kl);
    Log("vae", progress_.vae_step, o_.vae_steps, rec, absl::StrFormat(" (KL %.1f)", kl));
    if (absl::Status s = checkpoint(); !s.ok()) return s;
  }
  if (progress_.vae_step >= o_.vae_steps && !progress_.vae_rescaled && !ShouldStop()) {
    if (absl::Status s = RescaleLatents(); !s.ok()) return s;
  }
  window_start_ = Clock::now();
  for (; progress_.vae_rescaled && progress_.diffusion_step < o_.diffusion_steps && !ShouldStop();
       ++progress_.diffusion_step, ++steps_this_run_) {
    double heads = 0;
    const double eps = DiffusionStep(progress_.diffusion_step, &heads);
    if (o_.caption_loss_weight > 0)
      losses_ << "caption_heads\t" << progress_.diffusion_step << '\t' << heads << '\n';
    Log("unet", progress_.diffusion_step, o_.diffusion_steps, eps,
        o_.caption_loss_weight > 0 ? absl::StrFormat(" (caption heads %.4f)", heads) : "");
    if (absl::Status s = checkpoint(); !s.ok()) return s;
  }
  window_start_ = Clock::now();
  for (; progress_.diffusion_step >= o_.diffusion_steps &&
         progress_.decoder_step < o_.decoder_steps && !ShouldStop();
       ++progress_.decoder_step, ++steps_this_run_) {
    Log("decoder", progress_.decoder_step, o_.decoder_steps, DecoderStep(progress_.decoder_step),
        "");
    if (absl::Status s = checkpoint(); !s.ok()) return s;
  }
  if (absl::Status s = Save(); !s.ok()) return s;
  if (progress_.diffusion_step < o_.diffusion_steps || progress_.decoder_step < o_.decoder_steps) {
    std::printf(
        "stopped after %s of training (state saved in %s); run the same command again to resume\n",
        Duration(progress_.seconds).c_str(), state.c_str());
    return absl::OkStatus();
  }
  return Export();
}

absl::Status Trainer::Export() {
  const std::string path =
      o_.export_path.empty() ? o_.out_dir + "/model.safetensors" : o_.export_path;
  std::map<std::string, std::string> metadata = {
      {"sdgraph.description",
       "A demo model trained by sdgraph (sd-train) on procedurally drawn shapes: one flat circle, "
       "square or "
       "triangle in one of eight colours on a flat background. It has Stable Diffusion v1.x's "
       "architecture at "
       "small widths; it is not Stable Diffusion and knows nothing else."},
      {"sdgraph.config", ConfigName(m_.config)},
      {"sdgraph.native_size", std::to_string(o_.size)},
      {"sdgraph.seed", std::to_string(o_.seed)},
      {"sdgraph.recipe",
       absl::StrFormat("sd-train --config %s --size %d --seed %d --vae-steps %d --vae-batch %d "
                       "--diffusion-steps %d "
                       "--diffusion-batch %d --vae-lr %g --diffusion-lr %g --warmup-steps %d "
                       "--kl-weight %g --ema-decay %g "
                       "--pool-size %d --decoder-steps %d --decoder-lr %g --x0-weight-cap %g "
                       "--high-t-fraction %g --caption-loss-weight %g --decoder-edge-weight %g",
                       o_.config, o_.size, o_.seed, o_.vae_steps, o_.vae_batch, o_.diffusion_steps,
                       o_.diffusion_batch, o_.vae_lr, o_.diffusion_lr, o_.warmup_steps,
                       o_.kl_weight, o_.ema_decay, o_.pool_size, o_.decoder_steps, o_.decoder_lr,
                       o_.x0_weight_cap, o_.high_t_fraction, o_.caption_loss_weight,
                       o_.decoder_edge_weight)},
      {"sdgraph.train_seconds", absl::StrFormat("%.0f", progress_.seconds)},
      // A run from another model's weights trains no VAE of its own.
      {"sdgraph.train_steps",
       o_.init_from.empty()
           ? absl::StrFormat("vae %d, diffusion %d, decoder %d", progress_.vae_step,
                             progress_.diffusion_step, progress_.decoder_step)
           : absl::StrFormat("diffusion %d, decoder %d", progress_.diffusion_step,
                             progress_.decoder_step)},
  };
  if (!o_.init_from.empty()) ChainRecipe(o_.init_from, metadata);
  if (absl::Status s = ExportModel(path, m_, ema_, metadata); !s.ok()) return s;
  std::printf("wrote %s after %s of training\n", path.c_str(), Duration(progress_.seconds).c_str());
  return absl::OkStatus();
}

}  // namespace

absl::Status Train(const TrainOptions& options) {
  SdConfig config;
  if (options.config == "demo-shapes")
    config = SdConfig::DemoShapes();
  else if (options.config == "tiny")
    config = SdConfig::Tiny();
  else
    return absl::InvalidArgumentError(
        absl::StrCat("unknown --config '", options.config, "' (demo-shapes, tiny)"));
  SD_RETURN_IF_ERROR(
      CheckSize(options.size, config.unet, absl::StrCat("the ", options.config, " configuration")));
  SD_ASSIGN_OR_RETURN(auto tokenizer,
                      StartTraining(options.out_dir, options.tokenizer_dir, options.threads));
  return CatchExceptions("training", [&]() -> absl::Status {
    Trainer trainer(options, config, std::move(tokenizer));
    return trainer.Run();
  });
}

}  // namespace sd::train

#include "tools/train/inpaint_trainer.h"

#include <torch/torch.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nodes/base/exception_status.h"
#include "nodes/base/status_macros.h"
#include "nodes/text/clip_tokenizer.h"
#include "nodes/weights/demo_model.h"
#include "tools/train/fine_tune.h"
#include "tools/train/shapes_dataset.h"
#include "tools/train/train_state.h"
#include "tools/train/train_util.h"

namespace sd::train {
namespace {

constexpr int kPhase = 9;       // StepSeed's phase for the inpainting UNet's steps
constexpr int kPoolPhase = 10;  // and for its pools of samples
constexpr int kPoolReuse = 4;

class InpaintTrainer {
 public:
  InpaintTrainer(const InpaintTrainOptions& o, FineTuneStart start)
      : o_(o),
        m_(start.config),
        tokenizer_(std::move(start.tokenizer)),
        base_metadata_(std::move(start.base_metadata)),
        loop_("inpaint", "unet.", o, *m_.unet) {}

  absl::Status Run();

 private:
  absl::Status Init();
  void FillPool(int64_t chunk);
  torch::Tensor Loss(int64_t step);
  absl::Status Export();

  InpaintTrainOptions o_;
  Models m_;  // the UNet with 9 input channels
  std::unique_ptr<ClipTokenizer> tokenizer_;
  std::map<std::string, std::string> base_metadata_;  // the base model's (its recipe)
  FineTuneLoop loop_;
  int64_t pool_chunk_ = -1;
  // Moments of the pictures and of the masked pictures [N, 2e, h, w]; the masks [N, 1, S, S].
  torch::Tensor pool_moments_, pool_masked_moments_, pool_masks_;
  std::vector<std::string> pool_captions_;
};

// The base model's weights, its UNet widened to 9 input channels (zeros on the new ones); the text
// encoder and the VAE frozen.
absl::Status InpaintTrainer::Init() {
  SD_RETURN_IF_ERROR(InitFromCheckpoint(o_.base_model, m_, /*widen_unet_input=*/true));
  for (torch::Tensor& p : m_.clip->parameters()) p.set_requires_grad(false);
  for (torch::Tensor& p : m_.vae->parameters()) p.set_requires_grad(false);
  for (torch::Tensor& p : m_.unet->parameters()) p.set_requires_grad(true);
  return absl::OkStatus();
}

// Samples, their captions, masks and the moments of the pictures with and without the masked
// region (set to 0 in [-1, 1], as the MaskImage node does), drawn afresh every
// pool_size * kPoolReuse samples.
void InpaintTrainer::FillPool(int64_t chunk) {
  if (pool_chunk_ == chunk) return;
  torch::NoGradGuard no_grad;
  demo::ShapesDataset data(StepSeed(o_.seed, kPoolPhase, chunk), o_.size);
  const int64_t s = o_.size;
  torch::Tensor images = torch::empty({o_.pool_size, s, s, 3}, torch::kUInt8);
  pool_masks_ = torch::empty({o_.pool_size, 1, s, s}, torch::kUInt8);
  pool_captions_.clear();
  for (int i = 0; i < o_.pool_size; ++i) {
    demo::InpaintSample sample = data.NextInpainting();
    std::memcpy(images[i].data_ptr(), sample.rgb.data(), sample.rgb.size());
    std::memcpy(pool_masks_[i].data_ptr(), sample.mask.data(), sample.mask.size());
    pool_captions_.push_back(std::move(sample.caption));
  }
  const torch::Tensor x = ToUnitRange(images);
  pool_moments_ = EncodeMomentsInBatches(m_.vae, x);
  pool_masked_moments_ =
      EncodeMomentsInBatches(m_.vae, x * (1.0 - pool_masks_.to(torch::kFloat32)));
  pool_chunk_ = chunk;
}

torch::Tensor InpaintTrainer::Loss(int64_t step) {
  const int64_t n = o_.batch;
  FillPool(step * n / (int64_t{o_.pool_size} * kPoolReuse));
  const uint64_t seed = StepSeed(o_.seed, kPhase, step);
  torch::manual_seed(seed);
  std::mt19937_64 rng(seed);
  const torch::Tensor pick = torch::randint(0, o_.pool_size, {n}, torch::kInt64);
  const torch::Tensor ids = CaptionIds(*tokenizer_, pool_captions_, pick, o_.uncond_fraction, rng);
  const int64_t e = m_.config.vae.embed_dim;
  const double scale = m_.config.vae.scale_factor;
  torch::Tensor x0, masked, mask, context;
  {
    torch::NoGradGuard no_grad;
    x0 = Posterior(pool_moments_.index_select(0, pick), e).Sample() * scale;
    masked = Posterior(pool_masked_moments_.index_select(0, pick), e).Sample() * scale;
    // A latent pixel is repainted if any of its 8x8 pixels is (the MaskToLatent node's rule).
    mask = torch::max_pool2d(pool_masks_.index_select(0, pick).to(torch::kFloat32), {8, 8});
    context = m_.clip->forward(ids);
  }
  const NoisedLatents noised = NoiseAtRandomSteps(x0);
  const torch::Tensor input = torch::cat({noised.xt, mask, masked}, 1);
  return (m_.unet->forward(input, noised.t, context) - noised.eps).pow(2).mean();
}

absl::Status InpaintTrainer::Export() {
  const std::string path =
      o_.export_path.empty() ? o_.out_dir + "/model.safetensors" : o_.export_path;
  auto base_value = [&](const char* key) {
    auto it = base_metadata_.find(key);
    return it == base_metadata_.end() ? std::string() : it->second;
  };
  const std::string base_name = std::filesystem::path(o_.base_model).filename().string();
  const std::map<std::string, std::string> metadata = {
      {"sdgraph.description",
       absl::StrCat("An inpainting model made by sdgraph (sd-train-inpaint) from ", base_name,
                    ": its UNet also reads the mask and the masked picture (9 input channels, as "
                    "SD-inpainting's) and was fine-tuned to draw what the prompt says inside the "
                    "mask and keep what is outside. It is not Stable Diffusion and knows nothing "
                    "but the demo model's drawn shapes.")},
      {"sdgraph.config", ConfigName(m_.config)},
      {"sdgraph.base_model", base_name},
      {"sdgraph.base_recipe", base_value("sdgraph.recipe")},
      {kNativeSizeKey, std::to_string(o_.size)},
      {"sdgraph.seed", std::to_string(o_.seed)},
      {"sdgraph.recipe",
       absl::StrFormat("sd-train-inpaint --model %s --size %d --seed %d --steps %d --batch %d "
                       "--lr %g --warmup-steps %d --uncond-fraction %g --pool-size %d",
                       base_name, o_.size, o_.seed, o_.steps, o_.batch, o_.lr, o_.warmup_steps,
                       o_.uncond_fraction, o_.pool_size)},
      {"sdgraph.train_seconds", absl::StrFormat("%.0f", loop_.seconds())},
      {"sdgraph.train_steps", std::to_string(loop_.step())},
  };
  // No EMA here: the live weights are what ships.
  SD_RETURN_IF_ERROR(ExportModel(path, m_, DiffusionParams(m_), metadata));
  std::printf("wrote %s after %s of training\n", path.c_str(), Duration(loop_.seconds()).c_str());
  return absl::OkStatus();
}

absl::Status InpaintTrainer::Run() {
  SD_RETURN_IF_ERROR(Init());
  SD_ASSIGN_OR_RETURN(const bool done, loop_.Run([this](int64_t step) { return Loss(step); }));
  return done ? Export() : absl::OkStatus();
}

}  // namespace

absl::Status TrainInpainting(const InpaintTrainOptions& options) {
  InpaintTrainOptions o = options;
  SD_ASSIGN_OR_RETURN(FineTuneStart start, StartFineTune(&o, "already an inpainting model",
                                                         "start from a 4-channel model"));
  start.config.unet.in_channels = 9;
  return CatchExceptions("training the inpainting UNet", [&]() -> absl::Status {
    InpaintTrainer trainer(o, std::move(start));
    return trainer.Run();
  });
}

}  // namespace sd::train

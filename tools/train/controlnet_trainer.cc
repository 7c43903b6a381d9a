#include "tools/train/controlnet_trainer.h"

#include <torch/torch.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <stdexcept>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nodes/base/exception_status.h"
#include "nodes/base/status_macros.h"
#include "nodes/models/controlnet.h"
#include "nodes/ops/canny.h"
#include "nodes/text/clip_tokenizer.h"
#include "nodes/weights/demo_model.h"
#include "tools/train/fine_tune.h"
#include "tools/train/shapes_dataset.h"
#include "tools/train/train_state.h"
#include "tools/train/train_util.h"

namespace sd::train {
namespace {

constexpr int kPhase = 7;      // StepSeed's phase for the ControlNet's steps
constexpr int kPoolPhase = 8;  // and for its pools of pictures
constexpr int kPoolReuse = 4;

bool IsZeroConv(const std::string& name) {
  return name.rfind("zero_convs.", 0) == 0 || name.rfind("middle_block_out.", 0) == 0 ||
         name.rfind(absl::StrCat("input_hint_block.", HintConvs().back().index, "."), 0) == 0;
}

class ControlNetTrainer {
 public:
  ControlNetTrainer(const ControlNetTrainOptions& o, const SdConfig& config,
                    std::unique_ptr<ClipTokenizer> tokenizer)
      : o_(o),
        m_(config),
        cn_(ControlNetConfig::For(config.unet)),
        tokenizer_(std::move(tokenizer)),
        loop_("controlnet", "cn.", o, *cn_) {}

  absl::Status Run();

 private:
  absl::Status Init();
  void FillPool(int64_t chunk);
  torch::Tensor Loss(int64_t step);
  absl::Status Export();

  ControlNetTrainOptions o_;
  Models m_;
  ControlNet cn_;
  std::unique_ptr<ClipTokenizer> tokenizer_;
  FineTuneLoop loop_;
  int64_t pool_chunk_ = -1;
  torch::Tensor pool_moments_, pool_hints_;  // [N, 2e, h, w] float; [N, 1, S, S] uint8
  std::vector<std::string> pool_captions_;
};

// The base model frozen; the ControlNet as lllyasviel's recipe starts it: the UNet's encoder
// copied, the hint encoder fresh, the zero convolutions (and the hint encoder's last one) zero.
absl::Status ControlNetTrainer::Init() {
  SD_RETURN_IF_ERROR(InitFromCheckpoint(o_.base_model, m_));
  for (torch::nn::Module* net :
       std::initializer_list<torch::nn::Module*>{m_.clip.get(), m_.vae.get(), m_.unet.get()}) {
    for (torch::Tensor& p : net->parameters()) p.set_requires_grad(false);
  }
  torch::manual_seed(o_.seed);
  InitForTraining(*cn_, false);
  torch::NoGradGuard no_grad;
  const auto unet = m_.unet->named_parameters();
  for (auto& kv : cn_->named_parameters()) {
    if (IsZeroConv(kv.key())) {
      kv.value().zero_();
    } else if (const torch::Tensor* from = unet.find(kv.key())) {
      kv.value().copy_(*from);
    } else if (kv.key().rfind("input_hint_block.", 0) != 0) {
      return absl::InternalError(
          absl::StrCat("ControlNet parameter ", kv.key(), " has no counterpart in the UNet"));
    }
  }
  return absl::OkStatus();
}

// Pictures, their captions, latents' moments and Canny hints, drawn afresh every
// pool_size * kPoolReuse samples.
void ControlNetTrainer::FillPool(int64_t chunk) {
  if (pool_chunk_ == chunk) return;
  torch::NoGradGuard no_grad;
  demo::ShapesDataset data(StepSeed(o_.seed, kPoolPhase, chunk), o_.size);
  const int64_t s = o_.size;
  torch::Tensor images = torch::empty({o_.pool_size, s, s, 3}, torch::kUInt8);
  pool_hints_ = torch::empty({o_.pool_size, 1, s, s}, torch::kUInt8);
  pool_captions_.clear();
  for (int i = 0; i < o_.pool_size; ++i) {
    demo::ShapeSample sample = data.Next();
    std::memcpy(images[i].data_ptr(), sample.rgb.data(), sample.rgb.size());
    pool_captions_.push_back(std::move(sample.caption));
    auto edges = CannyEdges(images[i], o_.canny_low, o_.canny_high);
    // Drawn pictures and checked thresholds: a failure here is a bug, reported by Train's catch.
    if (!edges.ok()) throw std::runtime_error(std::string(edges.status().message()));
    pool_hints_[i][0].copy_(edges->select(2, 0));
  }
  pool_moments_ = EncodeMomentsInBatches(m_.vae, ToUnitRange(images));
  pool_chunk_ = chunk;
}

torch::Tensor ControlNetTrainer::Loss(int64_t step) {
  const int64_t n = o_.batch;
  FillPool(step * n / (int64_t{o_.pool_size} * kPoolReuse));
  const uint64_t seed = StepSeed(o_.seed, kPhase, step);
  torch::manual_seed(seed);
  std::mt19937_64 rng(seed);
  const torch::Tensor pick = torch::randint(0, o_.pool_size, {n}, torch::kInt64);
  const torch::Tensor ids = CaptionIds(*tokenizer_, pool_captions_, pick, o_.uncond_fraction, rng);
  torch::Tensor x0, context, hint;
  {
    torch::NoGradGuard no_grad;
    x0 = Posterior(pool_moments_.index_select(0, pick), m_.config.vae.embed_dim).Sample() *
         m_.config.vae.scale_factor;
    context = m_.clip->forward(ids);
    hint = pool_hints_.index_select(0, pick).to(torch::kFloat32).div(255.0).expand({n, 3, -1, -1});
  }
  const NoisedLatents noised = NoiseAtRandomSteps(x0);
  const std::vector<torch::Tensor> residuals =
      cn_->forward(noised.xt, hint.contiguous(), noised.t, context);
  return (m_.unet->forward(noised.xt, noised.t, context, residuals) - noised.eps).pow(2).mean();
}

absl::Status ControlNetTrainer::Export() {
  const std::string path =
      o_.export_path.empty() ? o_.out_dir + "/controlnet.safetensors" : o_.export_path;
  Fp16Safetensors file;
  for (const auto& kv : cn_->named_parameters()) file.Add(kv.key(), kv.value());
  const std::string base = std::filesystem::path(o_.base_model).filename().string();
  const std::map<std::string, std::string> metadata = {
      {"sdgraph.description",
       absl::StrCat("A ControlNet trained by sdgraph (sd-train-controlnet) for ", base,
                    " on procedurally drawn shapes: its hint is the Canny edges of a picture "
                    "(white edges on black), which fix the shape and where it is; the prompt "
                    "still gives the colours. It is not a Stable Diffusion ControlNet.")},
      {"sdgraph.base_model", base},
      {"sdgraph.hint", absl::StrFormat("canny %d %d", o_.canny_low, o_.canny_high)},
      {kNativeSizeKey, std::to_string(o_.size)},
      {"sdgraph.recipe",
       absl::StrFormat("sd-train-controlnet --model %s --size %d --seed %d --steps %d --batch %d "
                       "--lr %g --warmup-steps %d --uncond-fraction %g --canny-low %d "
                       "--canny-high %d --pool-size %d",
                       base, o_.size, o_.seed, o_.steps, o_.batch, o_.lr, o_.warmup_steps,
                       o_.uncond_fraction, o_.canny_low, o_.canny_high, o_.pool_size)},
      {"sdgraph.train_seconds", absl::StrFormat("%.0f", loop_.seconds())},
      {"sdgraph.train_steps", std::to_string(loop_.step())},
  };
  SD_RETURN_IF_ERROR(file.Write(path, metadata));
  std::printf("wrote %s after %s of training\n", path.c_str(), Duration(loop_.seconds()).c_str());
  return absl::OkStatus();
}

absl::Status ControlNetTrainer::Run() {
  SD_RETURN_IF_ERROR(Init());
  SD_ASSIGN_OR_RETURN(const bool done, loop_.Run([this](int64_t step) { return Loss(step); }));
  return done ? Export() : absl::OkStatus();
}

}  // namespace

absl::Status TrainControlNet(const ControlNetTrainOptions& options) {
  ControlNetTrainOptions o = options;
  SD_ASSIGN_OR_RETURN(
      FineTuneStart start,
      StartFineTune(&o, "an inpainting model", "a ControlNet is trained for a 4-channel model"));
  return CatchExceptions("training the ControlNet", [&]() -> absl::Status {
    ControlNetTrainer trainer(o, start.config, std::move(start.tokenizer));
    return trainer.Run();
  });
}

}  // namespace sd::train

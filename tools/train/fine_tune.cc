#include "tools/train/fine_tune.h"

#include <cstdio>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "nodes/base/exception_status.h"
#include "nodes/base/status_macros.h"
#include "nodes/schedulers/sampler.h"
#include "nodes/weights/checkpoint.h"
#include "nodes/weights/demo_model.h"
#include "tools/train/train_setup.h"
#include "tools/train/train_state.h"

namespace sd::train {

absl::StatusOr<FineTuneStart> StartFineTune(FineTuneOptions* o, const std::string& not_plain,
                                            const std::string& advice) {
  SD_ASSIGN_OR_RETURN(auto ckpt, Checkpoint::Open(o->base_model));
  FineTuneStart start;
  SD_ASSIGN_OR_RETURN(start.config,
                      DetectConfig([&](const std::string& name) { return ckpt->ShapeOf(name); }));
  if (start.config.unet.in_channels != 4) {
    return absl::InvalidArgumentError(absl::StrCat(o->base_model, ": ", not_plain, " (",
                                                   start.config.unet.in_channels,
                                                   " input channels); ", advice));
  }
  if (o->size == 0) o->size = NativeSize(ckpt->metadata()).value_or(kSd1NativeSize);
  SD_RETURN_IF_ERROR(CheckSize(o->size, start.config.unet, o->base_model));
  start.base_metadata = ckpt->metadata();
  SD_ASSIGN_OR_RETURN(start.tokenizer, StartTraining(o->out_dir, o->tokenizer_dir, o->threads));
  return start;
}

torch::Tensor ToUnitRange(const torch::Tensor& rgb) {
  return rgb.permute({0, 3, 1, 2}).to(torch::kFloat32).div(127.5).sub(1.0);
}

torch::Tensor EncodeMomentsInBatches(Vae& vae, const torch::Tensor& pictures) {
  std::vector<torch::Tensor> moments;
  constexpr int64_t kEncodeBatch = 64;
  const int64_t n = pictures.size(0);
  for (int64_t done = 0; done < n; done += kEncodeBatch)
    moments.push_back(
        vae->EncodeMoments(pictures.slice(0, done, std::min(n, done + kEncodeBatch)).contiguous()));
  return torch::cat(moments, 0);
}

torch::Tensor CaptionIds(const ClipTokenizer& tokenizer, const std::vector<std::string>& captions,
                         const torch::Tensor& pick, double uncond_fraction, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(0, 1);
  const int64_t n = pick.size(0);
  torch::Tensor ids = torch::empty({n, ClipTokenizer::kContextLength}, torch::kInt64);
  for (int64_t i = 0; i < n; ++i) {
    const std::string& caption = captions[pick[i].item<int64_t>()];
    const Tokenized t = tokenizer.Encode(u(rng) < uncond_fraction ? "" : caption);
    std::memcpy(ids[i].data_ptr(), t.ids.data(), t.ids.size() * sizeof(int64_t));
  }
  return ids;
}

NoisedLatents NoiseAtRandomSteps(const torch::Tensor& x0) {
  const NoiseSchedule& schedule = NoiseSchedule::StableDiffusion();
  const int64_t n = x0.size(0);
  NoisedLatents out;
  out.t = torch::randint(0, schedule.train_steps(), {n}, torch::kInt64);
  const torch::Tensor abar = schedule.alphas_cumprod.index_select(0, out.t).view({n, 1, 1, 1});
  out.eps = torch::randn_like(x0);
  out.xt = abar.sqrt() * x0 + (1.0 - abar).sqrt() * out.eps;
  return out;
}

FineTuneLoop::FineTuneLoop(std::string tag, std::string state_prefix, const FineTuneOptions& o,
                           torch::nn::Module& net)
    : tag_(std::move(tag)),
      state_prefix_(std::move(state_prefix)),
      o_(o),
      net_(net),
      opt_(net.parameters(), torch::optim::AdamWOptions(o_.lr).weight_decay(0.0)) {}

bool FineTuneLoop::ShouldStop() const {
  return StopRequested() || (o_.max_minutes > 0 && Since(run_start_) > o_.max_minutes * 60) ||
         (o_.stop_after_steps > 0 && steps_this_run_ >= o_.stop_after_steps);
}

double FineTuneLoop::Step(const std::function<torch::Tensor(int64_t)>& loss_of_step) {
  const torch::Tensor loss = loss_of_step(step_);
  SetLearningRate(opt_, LearningRate(o_.lr, step_, o_.steps, o_.warmup_steps));
  opt_.zero_grad();
  loss.backward();
  torch::nn::utils::clip_grad_norm_(net_.parameters(), 1.0);
  opt_.step();
  return loss.item<double>();
}

void FineTuneLoop::Log(double loss) {
  losses_ << tag_ << '\t' << step_ << '\t' << loss << '\n';
  window_loss_ += loss;
  ++window_steps_;
  if ((step_ + 1) % o_.log_every != 0 && step_ + 1 != o_.steps) return;
  const double per_step = Since(window_start_) / window_steps_;
  std::printf("[%s] step %lld/%d  loss %.5f  %.2f s/step  ETA %s\n", tag_.c_str(),
              static_cast<long long>(step_ + 1), o_.steps, window_loss_ / window_steps_, per_step,
              Duration(per_step * static_cast<double>(o_.steps - step_ - 1)).c_str());
  std::fflush(stdout);
  losses_.flush();
  window_loss_ = 0;
  window_steps_ = 0;
  window_start_ = Clock::now();
}

absl::Status FineTuneLoop::Save() {
  seconds_ += Since(last_save_);
  last_save_ = Clock::now();
  const std::string path = o_.out_dir + "/state.pt";
  return CatchExceptions(absl::StrCat("saving the training state to ", path), [&] {
    torch::serialize::OutputArchive a;
    for (const auto& kv : net_.named_parameters())
      a.write(state_prefix_ + kv.key(), kv.value().detach());
    torch::serialize::OutputArchive o;
    opt_.save(o);
    a.write("opt", o);
    a.write("step", torch::tensor({static_cast<double>(step_)}, torch::kFloat64));
    a.write("seconds", torch::tensor({seconds_}, torch::kFloat64));
    return SaveArchive(a, path);
  });
}

absl::Status FineTuneLoop::Load(const std::string& path) {
  return CatchExceptions(absl::StrCat("loading the training state ", path), [&] {
    torch::serialize::InputArchive a;
    a.load_from(path);
    torch::NoGradGuard no_grad;
    for (auto& kv : net_.named_parameters()) {
      torch::Tensor t;
      a.read(state_prefix_ + kv.key(), t);
      kv.value().copy_(t);
    }
    torch::serialize::InputArchive o;
    a.read("opt", o);
    opt_.load(o);
    torch::Tensor t;
    a.read("step", t);
    step_ = static_cast<int64_t>(t.item<double>());
    a.read("seconds", t);
    seconds_ = t.item<double>();
    return absl::OkStatus();
  });
}

absl::StatusOr<bool> FineTuneLoop::Run(const std::function<torch::Tensor(int64_t)>& loss_of_step) {
  const std::string state = o_.out_dir + "/state.pt";
  if (std::filesystem::exists(state)) {
    SD_RETURN_IF_ERROR(Load(state));
    std::printf("resuming from %s: step %lld, %s trained so far\n", state.c_str(),
                static_cast<long long>(step_), Duration(seconds_).c_str());
  }
  losses_.open(o_.out_dir + "/losses.tsv", std::ios::app);
  run_start_ = last_save_ = window_start_ = Clock::now();
  for (; step_ < o_.steps && !ShouldStop(); ++step_, ++steps_this_run_) {
    Log(Step(loss_of_step));
    if (Since(last_save_) >= o_.save_every_s) SD_RETURN_IF_ERROR(Save());
  }
  SD_RETURN_IF_ERROR(Save());
  if (step_ < o_.steps) {
    std::printf(
        "stopped after %s of training (state saved in %s); run the same command again to resume\n",
        Duration(seconds_).c_str(), state.c_str());
    return false;
  }
  return true;
}

}  // namespace sd::train

// The step loop of the trainers that fine-tune one network against a frozen model
// (sd-train-controlnet's ControlNet, sd-train-inpaint's 9-channel UNet): AdamW on the network's
// parameters with sd-train's warm-up and cosine learning rate, gradients clipped to norm 1,
// progress lines with loss and ETA, every loss in <out_dir>/losses.tsv, and a resumable state file
// (<out_dir>/state.pt: the network, the optimiser's moments, the step and the training time) saved
// every few minutes, on SIGINT/SIGTERM and at the end.
//
//   FineTuneLoop loop("controlnet", "cn.", options, *net);
//   SD_ASSIGN_OR_RETURN(bool done, loop.Run([&](int64_t step) { return LossOf(step); }));
//   if (done) export...
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nodes/models/vae.h"
#include "nodes/text/clip_tokenizer.h"
#include "nodes/weights/sd_config.h"
#include "tools/train/fine_tune_options.h"
#include "tools/train/train_util.h"

namespace sd::train {

// What a fine-tuning trainer starts from: the base model's configuration and metadata, and the
// tokenizer.
struct FineTuneStart {
  SdConfig config;
  std::map<std::string, std::string> base_metadata;
  std::unique_ptr<ClipTokenizer> tokenizer;
};

// Reads the base model's configuration (a 4-channel UNet; else INVALID_ARGUMENT "<model>:
// <not_plain> (N input channels); <advice>"), sets o->size to its native size when 0 and checks
// it, then StartTraining (train_setup.h).
absl::StatusOr<FineTuneStart> StartFineTune(FineTuneOptions* o, const std::string& not_plain,
                                            const std::string& advice);

// uint8 pictures [N, S, S, 3] -> float [N, 3, S, S] in [-1, 1].
torch::Tensor ToUnitRange(const torch::Tensor& rgb);

// The encoder's moments of pictures [N, 3, S, S] in [-1, 1], 64 at a time.
torch::Tensor EncodeMomentsInBatches(Vae& vae, const torch::Tensor& pictures);

// Token ids [n, 77] of the captions `pick` [n] chooses, each replaced by the empty prompt with
// probability `uncond_fraction` (drawn from `rng`).
torch::Tensor CaptionIds(const ClipTokenizer& tokenizer, const std::vector<std::string>& captions,
                         const torch::Tensor& pick, double uncond_fraction, std::mt19937_64& rng);

// Clean latents noised at timesteps drawn uniformly from SD's schedule (torch's generator):
// xt = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps.
struct NoisedLatents {
  torch::Tensor t, eps, xt;
};
NoisedLatents NoiseAtRandomSteps(const torch::Tensor& x0);

class FineTuneLoop {
 public:
  // `net`'s parameters are what the optimiser trains; they must outlive the loop. `tag` names the
  // phase in progress lines and losses.tsv ("controlnet"); `state_prefix` starts the parameters'
  // names in state.pt ("cn.").
  FineTuneLoop(std::string tag, std::string state_prefix, const FineTuneOptions& o,
               torch::nn::Module& net);

  // Resumes from <out_dir>/state.pt when it exists, then takes the remaining steps: each calls
  // `loss_of_step(step)` (whose data and noise should derive from the step alone, so that a
  // resumed run takes the same steps) and one optimiser step on it. True when every step is
  // done; false when a stop request or a limit ended the run early (the state is saved, and a
  // message says how to resume).
  absl::StatusOr<bool> Run(const std::function<torch::Tensor(int64_t)>& loss_of_step);

  int64_t step() const { return step_; }
  double seconds() const { return seconds_; }  // training time over all runs

 private:
  bool ShouldStop() const;
  double Step(const std::function<torch::Tensor(int64_t)>& loss_of_step);
  void Log(double loss);
  absl::Status Save();
  absl::Status Load(const std::string& path);

  std::string tag_, state_prefix_;
  FineTuneOptions o_;
  torch::nn::Module& net_;
  torch::optim::AdamW opt_;
  int64_t step_ = 0, steps_this_run_ = 0;
  double seconds_ = 0;
  Clock::time_point run_start_ = Clock::now(), last_save_ = Clock::now(),
                    window_start_ = Clock::now();
  double window_loss_ = 0;
  int window_steps_ = 0;
  std::ofstream losses_;
};

}  // namespace sd::train

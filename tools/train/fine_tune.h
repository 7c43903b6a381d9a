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
#include <string>

#include "absl/status/statusor.h"
#include "tools/train/fine_tune_options.h"
#include "tools/train/train_util.h"

namespace sd::train {

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

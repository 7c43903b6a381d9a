#include "tools/train/train_setup.h"

#include <torch/torch.h>

#include <atomic>
#include <csignal>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "nodes/base/runtime_info.h"

namespace sd::train {
namespace {

std::atomic<bool> g_stop{false};
extern "C" void OnStopSignal(int) { g_stop = true; }

}  // namespace

absl::Status CheckSize(int size, const UNetConfig& unet, const std::string& whose) {
  const int64_t multiple = 8 * (int64_t{1} << (unet.channel_mult.size() - 1));
  if (size <= 0 || size % multiple != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--size ", size, ": ", whose, " needs a multiple of ", multiple));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ClipTokenizer>> StartTraining(const std::string& out_dir,
                                                             const std::string& tokenizer_dir,
                                                             int threads) {
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec)
    return absl::PermissionDeniedError(absl::StrCat("cannot create ", out_dir, ": ", ec.message()));
  auto tokenizer =
      ClipTokenizer::Load(tokenizer_dir.empty() ? ClipTokenizer::DefaultDir() : tokenizer_dir);
  if (!tokenizer.ok()) return tokenizer.status();
  // Every core unless told: LibTorch's own default can be one thread on a VM whose CPU topology it
  // misreads (seen on a 2-core EPYC: the training ran at half speed).
  ConfigureThreads(threads);
  std::signal(SIGINT, OnStopSignal);
  std::signal(SIGTERM, OnStopSignal);
  return tokenizer;
}

bool StopRequested() { return g_stop.load(); }

}  // namespace sd::train

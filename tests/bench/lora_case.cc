#include "tests/bench/lora_case.h"

#include <torch/torch.h>

#include <chrono>

#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"
#include "nodes/base/runtime_info.h"
#include "nodes/base/status_macros.h"
#include "nodes/ops/model_cache.h"
#include "nodes/weights/checkpoint.h"
#include "nodes/weights/lora_keys.h"
#include "nodes/weights/safetensors.h"
#include "nodes/weights/sd_config.h"

namespace sd {
namespace {

double Since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// A kohya-named LoRA of `rank` for every UNet weight of rank 2 or 4 but the time embedding.
absl::StatusOr<size_t> WriteLora(const Checkpoint& ckpt, const SdConfig& config, int rank,
                                 const std::string& path, double* bytes) {
  std::vector<torch::Tensor> keep;
  std::vector<TensorToWrite> tensors;
  torch::manual_seed(1);
  size_t layers = 0;
  for (const TensorView& t : ckpt.tensors()) {
    if (!absl::StartsWith(t.name, kUNetPrefix) || !absl::EndsWith(t.name, ".weight")) continue;
    if ((t.shape.size() != 2 && t.shape.size() != 4) || absl::StrContains(t.name, "time_embed") ||
        absl::StrContains(t.name, "emb_layers"))
      continue;
    const std::string ldm = t.name.substr(std::string(kUNetPrefix).size(),
                                          t.name.size() - 7 - std::string(kUNetPrefix).size());
    const std::string stem =
        "lora_unet_" + absl::StrReplaceAll(DiffusersUNetPath(ldm, config.unet), {{".", "_"}});
    std::vector<int64_t> down_shape = {rank, t.shape[1]}, up_shape = {t.shape[0], rank};
    if (t.shape.size() == 4) {
      down_shape.insert(down_shape.end(), {t.shape[2], t.shape[3]});
      up_shape.insert(up_shape.end(), {1, 1});
    }
    keep.push_back((torch::randn(down_shape) * 0.01).to(torch::kHalf).contiguous());
    keep.push_back((torch::randn(up_shape) * 0.01).to(torch::kHalf).contiguous());
    for (size_t i : {keep.size() - 2, keep.size() - 1}) {
      const torch::Tensor& k = keep[i];
      *bytes += static_cast<double>(k.numel() * 2);
      tensors.push_back({stem + (i + 2 == keep.size() ? ".lora_down.weight" : ".lora_up.weight"),
                         DType::kF16,
                         k.sizes().vec(),
                         k.data_ptr(),
                         static_cast<uint64_t>(k.numel() * 2),
                         {}});
    }
    ++layers;
  }
  SD_RETURN_IF_ERROR(WriteSafetensors(path, tensors));
  return layers;
}

}  // namespace

absl::StatusOr<LoraApplyTiming> TimeLoraApply(const std::string& checkpoint, int rank,
                                              torch::ScalarType dtype, const std::string& dir) {
  ModelCache models;
  SD_ASSIGN_OR_RETURN(auto entry, models.Open(checkpoint));
  LoraApplyTiming t;
  t.rank = rank;
  const std::string lora = dir + "/bench-lora-r" + std::to_string(rank) + ".safetensors";
  SD_ASSIGN_OR_RETURN(t.layers,
                      WriteLora(*entry->checkpoint, entry->config, rank, lora, &t.lora_file_bytes));
  ResetPeakRss();
  auto t0 = std::chrono::steady_clock::now();
  SD_RETURN_IF_ERROR(models.GetUnet(checkpoint, dtype, torch::kCPU).status());
  t.base_seconds = Since(t0);
  t.rss_base = CurrentRss();
  t0 = std::chrono::steady_clock::now();
  SD_RETURN_IF_ERROR(
      models.GetUnet(checkpoint + "|lora=" + lora + ":1:0", dtype, torch::kCPU).status());
  t.lora_seconds = Since(t0);
  t.rss_patched = CurrentRss();
  t.peak_rss = PeakRss();
  return t;
}

}  // namespace sd

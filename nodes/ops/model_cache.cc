#include "nodes/ops/model_cache.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "nodes/models/model_util.h"

namespace sd {

absl::StatusOr<std::shared_ptr<const ModelCache::Entry>> ModelCache::Open(const std::string& path) {
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = by_path_.find(path); it != by_path_.end()) return it->second;
  if (path.empty()) return absl::InvalidArgumentError("no model given (--model CHECKPOINT)");
  auto ckpt = Checkpoint::Open(path);
  if (!ckpt.ok()) return ckpt.status();
  ShapeLookup lookup = [&](const std::string& n) { return (*ckpt)->ShapeOf(n); };
  auto config = DetectConfig(lookup);
  if (!config.ok()) return absl::Status(config.status().code(), absl::StrCat(path, ": ", config.status().message()));
  if (absl::Status s = CheckKeys(*config, lookup).ToStatus(path); !s.ok()) return s;
  auto entry = std::make_shared<Entry>();
  entry->checkpoint = *ckpt;
  entry->config = *config;
  entry->hash = (*ckpt)->ContentHash();
  // Two paths with the same content share one entry (and so one set of networks).
  for (const auto& [p, e] : by_path_) {
    if (e->hash == entry->hash) return by_path_[path] = e;
  }
  return by_path_[path] = entry;
}

template <typename M>
absl::StatusOr<M> ModelCache::Model(const std::string& path, const char* component, torch::ScalarType dtype,
                                    torch::Device device, const std::function<M(const SdConfig&)>& make,
                                    const char* prefix) {
  auto entry = Open(path);
  if (!entry.ok()) return entry.status();
  std::lock_guard<std::mutex> lock(mu_);
  auto key = std::make_tuple((*entry)->hash, std::string(component), static_cast<int>(dtype), device.str());
  if (auto it = models_.find(key); it != models_.end()) return M(std::static_pointer_cast<typename M::Impl>(it->second));
  M model = make((*entry)->config);
  if (absl::Status s = LoadWeights(*model, *(*entry)->checkpoint, prefix, dtype, device); !s.ok()) return s;
  model->eval();
  models_[key] = model.ptr();
  return model;
}

absl::StatusOr<ClipTextModel> ModelCache::GetClip(const std::string& path, torch::ScalarType dtype, torch::Device device) {
  return Model<ClipTextModel>(path, "clip", dtype, device, [](const SdConfig& c) { return ClipTextModel(c.clip); },
                              kClipPrefix);
}

absl::StatusOr<UNet> ModelCache::GetUnet(const std::string& path, torch::ScalarType dtype, torch::Device device) {
  return Model<UNet>(path, "unet", dtype, device, [](const SdConfig& c) { return UNet(c.unet); }, kUNetPrefix);
}

absl::StatusOr<sd::Vae> ModelCache::GetVae(const std::string& path, torch::ScalarType dtype, torch::Device device) {
  return Model<sd::Vae>(path, "vae", dtype, device, [](const SdConfig& c) { return sd::Vae(c.vae); }, kVaePrefix);
}

absl::StatusOr<std::shared_ptr<const ClipTokenizer>> ModelCache::Tokenizer(const std::string& dir_in) {
  const std::string dir = dir_in.empty() ? ClipTokenizer::DefaultDir() : dir_in;
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = tokenizers_.find(dir); it != tokenizers_.end()) return it->second;
  auto t = ClipTokenizer::Load(dir);
  if (!t.ok()) return t.status();
  return tokenizers_[dir] = std::shared_ptr<const ClipTokenizer>(std::move(*t));
}

}  // namespace sd

#include "nodes/ops/model_cache.h"

#include <malloc.h>
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
  if (auto it = models_.find(key); it != models_.end()) {
    it->second.last_use = ++clock_;
    return M(std::static_pointer_cast<typename M::Impl>(it->second.module));
  }
  M model = make((*entry)->config);
  if (absl::Status s = LoadWeights(*model, *(*entry)->checkpoint, prefix, dtype, device); !s.ok()) return s;
  model->eval();
  Built built{model.ptr(), 0, ++clock_};
  for (const torch::Tensor& t : model->parameters()) built.bytes += t.numel() * t.element_size();
  for (const torch::Tensor& t : model->buffers()) built.bytes += t.numel() * t.element_size();
  models_[key] = std::move(built);
  EvictLocked(key);
  return model;
}

void ModelCache::EvictLocked(const Key& keep) {
  if (budget_ == 0) return;
  auto total = [&] {
    uint64_t b = 0;
    for (const auto& [k, m] : models_) b += m.bytes;
    return b;
  };
  while (total() > budget_ && models_.size() > 1) {
    auto victim = models_.end();
    for (auto it = models_.begin(); it != models_.end(); ++it) {
      if (it->first != keep && (victim == models_.end() || it->second.last_use < victim->second.last_use)) victim = it;
    }
    if (victim == models_.end()) break;
    EraseLocked(victim);
    ++evictions_;
  }
}

std::map<ModelCache::Key, ModelCache::Built>::iterator ModelCache::EraseLocked(std::map<Key, Built>::iterator it) {
  const std::string hash = std::get<0>(it->first);
  const std::shared_ptr<torch::nn::Module> module = std::move(it->second.module);  // calls may still hold it
  it = models_.erase(it);
  bool used = false;
  for (const auto& [k, m] : models_) used = used || std::get<0>(k) == hash;
  for (auto e = by_path_.begin(); e != by_path_.end();) {
    if (e->second->hash != hash) {
      ++e;
    } else if (!used) {
      e = by_path_.erase(e);  // no network of this checkpoint left: close it
    } else {
      // The mapping stays for the other networks: hand back the pages of weights this one used in place
      // (an f32 file at f32). They are read from the file again should a call still holding it need them.
      for (const torch::Tensor& t : module->parameters()) {
        if (t.device().is_cpu()) e->second->checkpoint->file()->DropPages(t.data_ptr(), t.numel() * t.element_size());
      }
      ++e;
    }
  }
  return it;
}

uint64_t ModelCache::DropUnreferenced() {
  uint64_t dropped = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = models_.begin(); it != models_.end();) {
      if (it->second.module.use_count() > 1) {
        ++it;
        continue;
      }
      dropped += it->second.bytes;
      it = EraseLocked(it);
    }
  }
  if (dropped > 0) ::malloc_trim(0);  // large freed blocks of the heap go back to the system, not to a free list
  return dropped;
}

void ModelCache::SetBudget(uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  budget_ = bytes;
}

ModelCache::Stats ModelCache::GetStats() const {
  std::lock_guard<std::mutex> lock(mu_);
  Stats s;
  s.networks = models_.size();
  s.checkpoints = by_path_.size();
  for (const auto& [k, m] : models_) s.bytes += m.bytes;
  s.evictions = evictions_;
  return s;
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

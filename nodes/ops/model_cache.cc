#include "nodes/ops/model_cache.h"

#include <malloc.h>
#include <torch/torch.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nodes/base/exception_status.h"
#include "nodes/base/sha256.h"
#include "nodes/base/status_macros.h"
#include "nodes/models/layers.h"
#include "nodes/models/model_util.h"
#include "nodes/weights/embeddings.h"
#include "nodes/weights/model_ref.h"

namespace sd {

namespace {

// Reads, checks and hashes a checkpoint: the slow part of opening one, run without the cache's
// lock.
absl::StatusOr<std::shared_ptr<ModelCache::Entry>> ReadEntry(const std::string& path) {
  SD_ASSIGN_OR_RETURN(std::shared_ptr<const Checkpoint> ckpt, Checkpoint::Open(path));
  ShapeLookup lookup = [&](const std::string& n) { return ckpt->ShapeOf(n); };
  auto config = DetectConfig(lookup);
  if (!config.ok()) return absl::Status(config.status().code(), absl::StrCat(path, ": ", config.status().message()));
  SD_RETURN_IF_ERROR(CheckKeys(*config, lookup).ToStatus(path));
  auto entry = std::make_shared<ModelCache::Entry>();
  entry->checkpoint = ckpt;
  entry->config = *config;
  entry->hash = ckpt->ContentHash();
  return entry;
}

}  // namespace

void ModelCache::SetLoadHook(std::function<void(const std::string&)> hook) {
  std::lock_guard<std::mutex> lock(mu_);
  load_hook_ = std::move(hook);
}

absl::StatusOr<ModelCache::PatchFile> ModelCache::OpenPatch(const std::string& path) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = patches_.find(path); it != patches_.end()) return it->second;
  }
  SD_ASSIGN_OR_RETURN(std::shared_ptr<const Checkpoint> file, Checkpoint::Open(path));
  PatchFile patch{file, file->ContentHash()};
  std::lock_guard<std::mutex> lock(mu_);
  return patches_.emplace(path, std::move(patch)).first->second;
}

absl::StatusOr<std::string> ModelCache::FileHash(const std::string& path) {
  SD_ASSIGN_OR_RETURN(PatchFile f, OpenPatch(path));
  return f.hash;
}

absl::StatusOr<std::shared_ptr<const LoraFile>> ModelCache::Lora(const std::string& path,
                                                                 const std::string& base) {
  SD_ASSIGN_OR_RETURN(std::shared_ptr<const Entry> entry, Open(base));
  const auto key = std::make_pair(path, entry->hash);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = loras_.find(key); it != loras_.end()) return it->second;
  }
  SD_ASSIGN_OR_RETURN(LoraFile lora, CatchExceptions(path, [&] {
                        return LoadLora(path, LoraKeyTable::ForModel(ExpectedKeys(entry->config),
                                                                     entry->config.unet));
                      }));
  auto shared = std::make_shared<const LoraFile>(std::move(lora));
  std::lock_guard<std::mutex> lock(mu_);
  return loras_.emplace(key, shared).first->second;
}

absl::StatusOr<std::string> ModelCache::Identity(const std::string& ref_text) {
  SD_ASSIGN_OR_RETURN(ModelRef ref, ModelRef::Parse(ref_text));
  SD_ASSIGN_OR_RETURN(std::shared_ptr<const Entry> entry, Open(ref.base));
  if (!ref.HasPatches()) return entry->hash;
  // The reference with every file replaced by its content hash:
  // "BASEHASH|vae=VAEHASH|lora=HASH:U:T".
  SD_ASSIGN_OR_RETURN(const ModelRef hashed,
                      ref.Map([&](const std::string& part) -> absl::StatusOr<std::string> {
                        if (part == ref.base) return entry->hash;
                        return FileHash(part);
                      }));
  const std::string parts = hashed.Format();
  Sha256 sha;
  sha.Update(parts.data(), parts.size());
  return sha.FinishHex();
}

absl::StatusOr<std::shared_ptr<const ModelCache::Entry>> ModelCache::Open(
    const std::string& ref_text) {
  if (ref_text.find('|') != std::string::npos) {
    SD_ASSIGN_OR_RETURN(ModelRef ref, ModelRef::Parse(ref_text));
    if (!ref.vae.empty()) SD_RETURN_IF_ERROR(OpenPatch(ref.vae).status());
    for (const LoraRef& l : ref.loras) SD_RETURN_IF_ERROR(Lora(l.name, ref.base).status());
    for (const std::string& c : ref.controls) SD_RETURN_IF_ERROR(OpenPatch(c).status());
    return Open(ref.base);
  }
  const std::string& path = ref_text;
  std::promise<EntryResult> promise;
  std::shared_future<EntryResult> pending;
  std::function<void(const std::string&)> hook;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = by_path_.find(path); it != by_path_.end()) return it->second;
    if (path.empty()) return absl::InvalidArgumentError("no model given (--model CHECKPOINT)");
    if (auto it = opening_.find(path); it != opening_.end()) {
      pending = it->second;  // another call is reading this file: wait for it, not for the cache
    } else {
      opening_[path] = promise.get_future().share();
      hook = load_hook_;
    }
  }
  if (pending.valid()) return pending.get();
  if (hook) hook(path);
  absl::StatusOr<std::shared_ptr<Entry>> read =
      CatchExceptions(path, [&] { return ReadEntry(path); });
  EntryResult result = absl::UnknownError("unset");
  {
    std::lock_guard<std::mutex> lock(mu_);
    opening_.erase(path);
    if (!read.ok()) {
      result = read.status();
    } else {
      // Two paths with the same content share one entry (and so one set of networks).
      std::shared_ptr<const Entry> entry = *read;
      for (const auto& [p, e] : by_path_) {
        if (e->hash == entry->hash) entry = e;
      }
      result = by_path_[path] = entry;
    }
  }
  promise.set_value(result);
  return result;
}

template <typename M>
absl::StatusOr<M> ModelCache::Model(const std::string& path, const char* component,
                                    torch::ScalarType dtype, torch::Device device,
                                    const std::function<M(const SdConfig&)>& make,
                                    const char* prefix, bool int8) {
  SD_ASSIGN_OR_RETURN(ModelRef ref, ModelRef::Parse(path));
  SD_ASSIGN_OR_RETURN(std::shared_ptr<const Entry> entry, Open(ref.base));
  // Where the weights come from: the checkpoint, or for the VAE a standalone file.
  std::shared_ptr<const Checkpoint> weights = entry->checkpoint;
  std::string weights_hash = entry->hash, weights_prefix = prefix;
  if (std::string(component) == "vae" && !ref.vae.empty()) {
    SD_ASSIGN_OR_RETURN(PatchFile vae, OpenPatch(ref.vae));
    weights = vae.file;
    weights_hash = vae.hash;
    if (!weights->Find(std::string(kVaePrefix) + "decoder.conv_in.weight")) weights_prefix = "";
    if (!weights->Find(weights_prefix + "decoder.conv_in.weight")) {
      return absl::InvalidArgumentError(absl::StrCat(
          ref.vae, ": not a VAE in the CompVis layout (no decoder.conv_in.weight, with or without ",
          kVaePrefix, "); diffusers' AutoencoderKL files are not read"));
    }
  }
  // LoRAs with a strength on this network: a network of its own, named by the files and strengths.
  const bool unet = std::string(component) == "unet", clip = std::string(component) == "clip";
  std::vector<std::pair<std::shared_ptr<const LoraFile>, double>> loras;
  std::string variant = absl::StrCat(component, int8 ? "|q8" : "");
  for (const LoraRef& l : ref.loras) {
    const double strength = unet ? l.unet : clip ? l.text : 0.0;
    if (strength == 0) continue;
    SD_ASSIGN_OR_RETURN(std::shared_ptr<const LoraFile> lora, Lora(l.name, ref.base));
    absl::StrAppend(&variant, "|lora=", lora->sha256, absl::StrFormat(":%.9g", strength));
    loras.emplace_back(std::move(lora), strength);
  }
  const Key key = std::make_tuple(weights_hash, variant, static_cast<int>(dtype), device.str());
  SD_ASSIGN_OR_RETURN(
      std::shared_ptr<torch::nn::Module> built,
      Cached(key, absl::StrCat(path, ":", component),
             [&]() -> absl::StatusOr<std::shared_ptr<torch::nn::Module>> {
               M model = make(entry->config);
               // int8: quantized layer by layer as loaded, unless LoRAs change the weights first.
               absl::Status loaded = LoadWeights(*model, *weights, weights_prefix, dtype, device,
                                                 int8 && loras.empty());
               if (!loaded.ok() && weights != entry->checkpoint) {
                 return absl::Status(loaded.code(), absl::StrCat("VAE ", ref.vae, " does not fit ",
                                                                 ref.base, ": ", loaded.message()));
               }
               SD_RETURN_IF_ERROR(loaded);
               if (!loras.empty()) {
                 std::vector<std::pair<const LoraFile*, double>> apply;
                 for (const auto& [lora, strength] : loras)
                   apply.emplace_back(lora.get(), strength);
                 SD_RETURN_IF_ERROR(ApplyLoras(
                     *model, prefix, unet ? LoraComponent::kUNet : LoraComponent::kText, apply));
               }
               if (int8 && !loras.empty()) nn::UseInt8Layers(*model);  // after the LoRAs
               return std::shared_ptr<torch::nn::Module>(model.ptr());
             }));
  return M(std::static_pointer_cast<typename M::Impl>(built));
}

absl::StatusOr<std::shared_ptr<torch::nn::Module>> ModelCache::Cached(
    const Key& key, const std::string& what,
    const std::function<absl::StatusOr<std::shared_ptr<torch::nn::Module>>()>& build) {
  std::promise<ModuleResult> promise;
  std::shared_future<ModuleResult> pending;
  std::function<void(const std::string&)> hook;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = models_.find(key); it != models_.end()) {
      it->second.last_use = ++clock_;
      return it->second.module;
    }
    if (auto it = building_.find(key); it != building_.end()) {
      pending = it->second;  // one build per network; the others wait on it
    } else {
      building_[key] = promise.get_future().share();
      hook = load_hook_;
    }
  }
  if (pending.valid()) return pending.get();
  if (hook) hook(what);
  // Built without the lock: calls on networks already built go on meanwhile.
  ModuleResult built = CatchExceptions(absl::StrCat(what, ": building"), [&]() -> ModuleResult {
    SD_ASSIGN_OR_RETURN(std::shared_ptr<torch::nn::Module> m, build());
    m->eval();
    return m;
  });
  {
    std::lock_guard<std::mutex> lock(mu_);
    building_.erase(key);
    if (built.ok()) {
      Built b{*built, 0, ++clock_};
      for (const torch::Tensor& t : (*built)->parameters()) b.bytes += t.numel() * t.element_size();
      for (const torch::Tensor& t : (*built)->buffers()) b.bytes += t.numel() * t.element_size();
      models_[key] = std::move(b);
      EvictLocked(key);
    }
  }
  promise.set_value(built);
  return built;
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

absl::StatusOr<UNet> ModelCache::GetUnet(const std::string& path, torch::ScalarType dtype,
                                         torch::Device device, bool int8) {
  return Model<UNet>(
      path, "unet", dtype, device, [](const SdConfig& c) { return UNet(c.unet); }, kUNetPrefix,
      int8);
}

absl::StatusOr<sd::Vae> ModelCache::GetVae(const std::string& path, torch::ScalarType dtype, torch::Device device) {
  return Model<sd::Vae>(path, "vae", dtype, device, [](const SdConfig& c) { return sd::Vae(c.vae); }, kVaePrefix);
}

absl::StatusOr<ControlNet> ModelCache::GetControlNet(const std::string& path,
                                                     torch::ScalarType dtype,
                                                     torch::Device device) {
  SD_ASSIGN_OR_RETURN(const std::string weights,
                      ControlNetWeightsFile(path));  // a diffusers folder: its file
  SD_ASSIGN_OR_RETURN(PatchFile file, OpenPatch(weights));
  const Key key = std::make_tuple(file.hash, "controlnet", static_cast<int>(dtype), device.str());
  SD_ASSIGN_OR_RETURN(
      std::shared_ptr<torch::nn::Module> built,
      Cached(key, absl::StrCat(path, ":controlnet"),
             [&]() -> absl::StatusOr<std::shared_ptr<torch::nn::Module>> {
               SD_ASSIGN_OR_RETURN(ControlNetFile layout, ReadControlNetLayout(*file.file));
               ControlNet net(layout.config);
               SD_RETURN_IF_ERROR(LoadWeights(
                   *net, *file.file, [&](const std::string& name) { return layout.KeyOf(name); },
                   dtype, device));
               return std::shared_ptr<torch::nn::Module>(net.ptr());
             }));
  return ControlNet(std::static_pointer_cast<ControlNetImpl>(built));
}

absl::StatusOr<std::shared_ptr<const ClipTokenizer>> ModelCache::Tokenizer(const std::string& dir_in) {
  const std::string dir = dir_in.empty() ? ClipTokenizer::DefaultDir() : dir_in;
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = tokenizers_.find(dir); it != tokenizers_.end()) return it->second;
  auto t = ClipTokenizer::Load(dir);
  if (!t.ok()) return t.status();
  return tokenizers_[dir] = std::shared_ptr<const ClipTokenizer>(std::move(*t));
}

absl::StatusOr<std::shared_ptr<EmbeddingLibrary>> ModelCache::Embeddings(const std::string& dir) {
  std::error_code ec;
  const auto when = std::filesystem::last_write_time(dir, ec);
  const int64_t mtime = ec ? -1 : static_cast<int64_t>(when.time_since_epoch().count());
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = embeddings_.find(dir);
      it != embeddings_.end() && it->second.first == mtime && mtime != -1) {
    return it->second.second;
  }
  auto lib = EmbeddingLibrary::Open(dir);
  if (!lib.ok()) return lib.status();
  embeddings_[dir] = {mtime, *lib};
  return *lib;
}

}  // namespace sd

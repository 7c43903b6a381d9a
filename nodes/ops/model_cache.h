// Models are resources, not data: each checkpoint is opened once per process and its networks are
// built once per (content hash, compute dtype, device), then shared by every node and run that
// names it. Opening (reading, hashing) and building happen outside the cache's lock: calls on
// networks already built go on meanwhile, and concurrent calls for the same checkpoint or network
// wait for the one load.
#pragma once

#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "absl/status/statusor.h"
#include "nodes/models/clip_text.h"
#include "nodes/models/controlnet.h"
#include "nodes/models/unet.h"
#include "nodes/models/vae.h"
#include "nodes/text/clip_tokenizer.h"
#include "nodes/weights/checkpoint.h"
#include "nodes/weights/lora.h"
#include "nodes/weights/sd_config.h"

namespace sd {

class EmbeddingLibrary;

class ModelCache {
 public:
  struct Entry {
    std::shared_ptr<const Checkpoint> checkpoint;
    SdConfig config;
    std::string hash;
  };
  // Opens the checkpoint at `path` (once), detects its configuration and checks every key. `path`
  // may be a model reference with patches (model_ref.h): the entry is then its base checkpoint's,
  // and the patch files are opened too (an error names the one that fails).
  absl::StatusOr<std::shared_ptr<const Entry>> Open(const std::string& path);
  // What workers agree on: the base checkpoint's sha256 when unpatched, else the sha256 of the
  // parts' hashes ("BASEHASH|vae=VAEHASH").
  absl::StatusOr<std::string> Identity(const std::string& ref);
  // sha256 of a patch file (a standalone VAE, a LoRA), read once.
  absl::StatusOr<std::string> FileHash(const std::string& path);
  // A LoRA file read against the layers of the checkpoint at `base` (once per pair).
  absl::StatusOr<std::shared_ptr<const LoraFile>> Lora(const std::string& path,
                                                       const std::string& base);
  // The networks of a reference: the VAE is the standalone file's when it names one (same layout as
  // the checkpoint's VAE, with or without the first_stage_model. prefix).
  absl::StatusOr<ClipTextModel> GetClip(const std::string& path, torch::ScalarType dtype, torch::Device device);
  // int8: its 3x3 convolutions and, with VNNI, feed-forward projections in int8
  // (nn::UseInt8Layers; a network of its own). An int8 checkpoint's int8 layers are int8 either
  // way.
  absl::StatusOr<UNet> GetUnet(const std::string& path, torch::ScalarType dtype,
                               torch::Device device, bool int8 = false);
  absl::StatusOr<sd::Vae> GetVae(const std::string& path, torch::ScalarType dtype, torch::Device device);
  // A ControlNet file in any layout (controlnet_layout.h), opened and hashed once, its network
  // built once per (content, dtype, device).
  absl::StatusOr<ControlNet> GetControlNet(const std::string& path, torch::ScalarType dtype,
                                           torch::Device device);
  absl::StatusOr<std::shared_ptr<const ClipTokenizer>> Tokenizer(const std::string& dir);
  // The textual-inversion embeddings of `dir`, listed once and each file read once, for as long as
  // the folder is unchanged (a file added, removed or renamed into place there lists it again; a
  // file rewritten in place is not seen by a process that already read it).
  absl::StatusOr<std::shared_ptr<EmbeddingLibrary>> Embeddings(const std::string& dir);

  // Memory budget for built networks (0: unlimited). When a new network would exceed it, the least recently
  // used others are dropped (calls still holding one keep it alive until they finish); a checkpoint with no
  // networks left is closed.
  void SetBudget(uint64_t bytes);
  // Drops every built network that nothing outside the cache holds any more (a run that is done with it
  // closed its kernels) as an eviction does (the checkpoint is closed when none of its networks is left),
  // and returns freed heap memory to the system. Returns the bytes of the networks dropped.
  uint64_t DropUnreferenced();
  struct Stats {
    size_t networks = 0;     // built networks held
    size_t checkpoints = 0;  // open checkpoint files
    uint64_t bytes = 0;      // parameter and buffer bytes of the networks
    uint64_t evictions = 0;
  };
  Stats GetStats() const;

  // For tests: called (outside the lock) as a checkpoint starts to open (with its path) and as a
  // network starts to build (with "PATH:component"), so a test can hold a load while it checks
  // what else goes on.
  void SetLoadHook(std::function<void(const std::string&)> hook);

 private:
  // int8: the network's int8 layers (nn::UseInt8Layers), cached apart from the plain network.
  template <typename M>
  absl::StatusOr<M> Model(const std::string& ref, const char* component, torch::ScalarType dtype,
                          torch::Device device, const std::function<M(const SdConfig&)>& make,
                          const char* prefix, bool int8 = false);
  using Key =
      std::tuple<std::string, std::string, int, std::string>;  // hash, component, dtype, device
  // The network under `key`: built once by `build` (outside the lock; concurrent calls wait for
  // that build), then shared. `what` names it for the load hook and errors.
  absl::StatusOr<std::shared_ptr<torch::nn::Module>> Cached(
      const Key& key, const std::string& what,
      const std::function<absl::StatusOr<std::shared_ptr<torch::nn::Module>>()>& build);
  struct PatchFile {
    std::shared_ptr<const Checkpoint> file;
    std::string hash;
  };
  // A patch file (a standalone VAE), opened and hashed once.
  absl::StatusOr<PatchFile> OpenPatch(const std::string& path);
  struct Built {
    std::shared_ptr<torch::nn::Module> module;
    uint64_t bytes = 0;
    uint64_t last_use = 0;
  };
  void EvictLocked(const Key& keep);
  // Erases one built network (the next iterator is returned): its checkpoint is closed when no other network
  // uses it, else the pages of the weights it used in place in the mapping are handed back.
  std::map<Key, Built>::iterator EraseLocked(std::map<Key, Built>::iterator it);
  using EntryResult = absl::StatusOr<std::shared_ptr<const Entry>>;
  using ModuleResult = absl::StatusOr<std::shared_ptr<torch::nn::Module>>;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<const Entry>> by_path_;
  std::map<std::string, std::shared_future<EntryResult>> opening_;  // loads in progress, by path
  std::map<Key, std::shared_future<ModuleResult>> building_;        // builds in progress
  std::function<void(const std::string&)> load_hook_;
  std::map<Key, Built> models_;
  uint64_t budget_ = 0, clock_ = 0, evictions_ = 0;
  std::map<std::string, std::shared_ptr<const ClipTokenizer>> tokenizers_;
  std::map<std::string, std::pair<int64_t, std::shared_ptr<EmbeddingLibrary>>>
      embeddings_;                            // dir -> (mtime, lib)
  std::map<std::string, PatchFile> patches_;  // by path
  std::map<std::pair<std::string, std::string>, std::shared_ptr<const LoraFile>>
      loras_;  // (path, base hash)
};

}  // namespace sd

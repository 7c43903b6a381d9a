// Models are resources, not data: each checkpoint is opened once per process and its networks are built
// once per (content hash, compute dtype, device), then shared by every node and run that names it.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "absl/status/statusor.h"
#include "nodes/models/clip_text.h"
#include "nodes/models/unet.h"
#include "nodes/models/vae.h"
#include "nodes/text/clip_tokenizer.h"
#include "nodes/weights/checkpoint.h"
#include "nodes/weights/sd_config.h"

namespace sd {

class ModelCache {
 public:
  struct Entry {
    std::shared_ptr<const Checkpoint> checkpoint;
    SdConfig config;
    std::string hash;
  };
  // Opens the checkpoint at `path` (once), detects its configuration and checks every key.
  absl::StatusOr<std::shared_ptr<const Entry>> Open(const std::string& path);
  absl::StatusOr<ClipTextModel> GetClip(const std::string& path, torch::ScalarType dtype, torch::Device device);
  absl::StatusOr<UNet> GetUnet(const std::string& path, torch::ScalarType dtype, torch::Device device);
  absl::StatusOr<sd::Vae> GetVae(const std::string& path, torch::ScalarType dtype, torch::Device device);
  absl::StatusOr<std::shared_ptr<const ClipTokenizer>> Tokenizer(const std::string& dir);

 private:
  template <typename M>
  absl::StatusOr<M> Model(const std::string& path, const char* component, torch::ScalarType dtype,
                          torch::Device device, const std::function<M(const SdConfig&)>& make, const char* prefix);
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<const Entry>> by_path_;
  std::map<std::tuple<std::string, std::string, int, std::string>, std::shared_ptr<torch::nn::Module>> models_;
  std::map<std::string, std::shared_ptr<const ClipTokenizer>> tokenizers_;
};

}  // namespace sd

// Textual-inversion embeddings: a folder of files, each named for the word it teaches (`style.pt`
// is used by writing "style" in a prompt), holding that word's vectors for the text encoder.
// Formats, recognised by content: AUTOMATIC1111's trainer's `.pt` (`string_to_param` -> {"*":
// [n, width]}, read with the restricted unpickler: nothing in it is executed), `.safetensors`
// with `emb_params` (or any single tensor), and a single-tensor `.bin`/`.pt` (diffusers).
//
//   SD_ASSIGN_OR_RETURN(auto lib, EmbeddingLibrary::Open(dir));
//   std::map<std::string, int> counts = ...;   // lib->Names(), then lib->Load(name) when a prompt
//   uses it
#pragma once

#include <torch/types.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace sd {

struct Embedding {
  std::string name;  // the word (the file's stem, cleaned as prompts are: lower case)
  std::string path;
  torch::Tensor vectors;  // float32 [n, width], 1 <= n <= 75
  std::string sha256;     // of the file's bytes
};

// One embedding file: INVALID_ARGUMENT naming the file when it holds no usable vectors.
absl::StatusOr<Embedding> LoadEmbedding(const std::string& path, const std::string& name);

class EmbeddingLibrary {
 public:
  // Lists `dir` (not recursive): files ending .pt, .bin or .safetensors. NOT_FOUND when `dir` is
  // not a readable folder.
  static absl::StatusOr<std::shared_ptr<EmbeddingLibrary>> Open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  // The words the folder defines (cleaned stems).
  std::vector<std::string> Names() const;
  // Loads (once) and returns `name`; INVALID_ARGUMENT when two files define it.
  absl::StatusOr<std::shared_ptr<const Embedding>> Load(const std::string& name);

 private:
  std::string dir_;
  std::map<std::string, std::vector<std::string>> files_;  // name -> paths
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<const Embedding>> loaded_;
};

}  // namespace sd

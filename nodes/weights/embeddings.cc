#include "nodes/weights/embeddings.h"

#include <torch/torch.h>

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nodes/base/status_macros.h"
#include "nodes/text/clip_tokenizer.h"
#include "nodes/text/prompt_chunks.h"
#include "nodes/weights/checkpoint.h"
#include "nodes/weights/torch_tensors.h"

namespace sd {
namespace {

// The tensor that holds the vectors: A1111's string_to_param entry, then emb_params, then the only
// tensor of the file.
absl::StatusOr<const TensorView*> PickVectors(const Checkpoint& file) {
  std::vector<const TensorView*> a1111;
  for (const TensorView& t : file.tensors()) {
    if (absl::StartsWith(t.name, "string_to_param.")) a1111.push_back(&t);
  }
  if (a1111.size() == 1) return a1111[0];
  if (const TensorView* t = file.Find("emb_params")) return t;
  if (a1111.empty() && file.tensors().size() == 1) return &file.tensors()[0];
  std::vector<std::string> names;
  for (const TensorView& t : file.tensors()) names.push_back(t.name);
  return absl::InvalidArgumentError(
      absl::StrCat("embedding ", file.path(),
                   ": no textual-inversion vectors found (expected string_to_param, "
                   "emb_params or a single tensor; the file has ",
                   names.empty() ? "no tensors" : absl::StrJoin(names, ", "), ")"));
}

}  // namespace

absl::StatusOr<Embedding> LoadEmbedding(const std::string& path, const std::string& name) {
  SD_ASSIGN_OR_RETURN(std::shared_ptr<const Checkpoint> file, Checkpoint::Open(path));
  SD_ASSIGN_OR_RETURN(const TensorView* view, PickVectors(*file));
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("embedding ", path, ": tensor '", view->name,
                                                   "' ", ShapeString(view->shape), " ", why));
  };
  if (!IsFloatingPoint(view->dtype)) return bad("is not floating point");
  if (view->shape.empty() || view->shape.size() > 2) return bad("is not [vectors, width]");
  SD_ASSIGN_OR_RETURN(torch::Tensor t, LoadTensor(*file, view->name, torch::kFloat32));
  t = t.reshape({-1, view->shape.back()}).clone();
  if (t.size(0) < 1 || t.size(0) > kChunkTokens) {
    return bad(absl::StrCat("has ", t.size(0), " vectors; an embedding has 1 to ", kChunkTokens));
  }
  if (t.size(1) < 1) return bad("has no width");
  if (!torch::isfinite(t).all().item<bool>()) return bad("holds non-finite values");
  return Embedding{name, path, t, file->ContentHash()};
}

absl::StatusOr<std::shared_ptr<EmbeddingLibrary>> EmbeddingLibrary::Open(const std::string& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    return absl::NotFoundError(
        absl::StrCat("embeddings folder ", dir, " is not a readable folder"));
  }
  auto lib = std::make_shared<EmbeddingLibrary>();
  lib->dir_ = dir;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::filesystem::path& p = entry.path();
    const std::string ext = p.extension().string();
    if (!entry.is_regular_file(ec) || (ext != ".pt" && ext != ".bin" && ext != ".safetensors"))
      continue;
    const std::string name = ClipTokenizer::Clean(p.stem().string());
    if (!name.empty()) lib->files_[name].push_back(p.string());
  }
  if (ec) return absl::NotFoundError(absl::StrCat("embeddings folder ", dir, ": ", ec.message()));
  return lib;
}

std::vector<std::string> EmbeddingLibrary::Names() const {
  std::vector<std::string> names;
  for (const auto& [name, paths] : files_) names.push_back(name);
  return names;
}

absl::StatusOr<std::shared_ptr<const Embedding>> EmbeddingLibrary::Load(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = loaded_.find(name); it != loaded_.end()) return it->second;
  auto it = files_.find(name);
  if (it == files_.end()) {
    return absl::NotFoundError(absl::StrCat("no embedding '", name, "' in ", dir_));
  }
  if (it->second.size() > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "embedding '", name, "' is defined by ", absl::StrJoin(it->second, " and "), ": keep one"));
  }
  SD_ASSIGN_OR_RETURN(Embedding e, LoadEmbedding(it->second[0], name));
  auto shared = std::make_shared<const Embedding>(std::move(e));
  loaded_[name] = shared;
  return shared;
}

}  // namespace sd

#include "nodes/ops/prompt_tokens.h"

#include <torch/torch.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "nodes/base/status_macros.h"

namespace sd {

torch::Tensor PreparedPrompt::Vectors() const {
  if (embeddings.empty()) return torch::zeros({1, 0, 0}, torch::kFloat32);
  std::vector<torch::Tensor> rows;
  for (const auto& e : embeddings) rows.push_back(e->vectors);
  return torch::cat(rows, 0).unsqueeze(0);
}

namespace {

// The chunks into `out`, unless a weight overflowed (nested explicit weights multiply).
absl::StatusOr<PreparedPrompt> Finish(PromptChunks chunks, PreparedPrompt out) {
  for (const std::vector<float>& row : chunks.weights) {
    for (float w : row) {
      if (!std::isfinite(w)) {
        return absl::InvalidArgumentError(
            "a prompt weight is out of range (nested weights multiply past float's range)");
      }
    }
  }
  out.chunks = std::move(chunks);
  return out;
}

}  // namespace

absl::StatusOr<PreparedPrompt> PreparePrompt(const std::string& text, PromptWeighting mode,
                                             const ClipTokenizer& tokenizer,
                                             EmbeddingLibrary* library) {
  if (text.size() > kMaxPromptBytes) {
    return absl::InvalidArgumentError(absl::StrCat("a prompt of ", text.size(), " bytes; at most ",
                                                   kMaxPromptBytes, " are taken"));
  }
  // <lora:...> tags are the front end's to apply; they are not words.
  SD_ASSIGN_OR_RETURN(std::string words, StripLoraTags(text, nullptr));
  if (mode == PromptWeighting::kComfy) words = ComfyEmbeddingWords(words);
  const std::vector<PromptSpan> spans = ParsePrompt(words, mode);
  PreparedPrompt out;
  if (!library) return Finish(ChunkPrompt(spans, tokenizer, {}), std::move(out));
  // First find the words that name embeddings (any count will do for that), then load only those
  // and chunk with their real lengths: the same words match, as no other name did.
  std::map<std::string, int> names;
  for (const std::string& name : library->Names()) names[name] = 1;
  const PromptChunks found = ChunkPrompt(spans, tokenizer, names);
  std::map<std::string, int> used;
  for (const std::string& name : found.embeddings) {
    SD_ASSIGN_OR_RETURN(std::shared_ptr<const Embedding> e, library->Load(name));
    if (!out.embeddings.empty() && out.embeddings[0]->vectors.size(1) != e->vectors.size(1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "embeddings ", out.embeddings[0]->path, " (width ", out.embeddings[0]->vectors.size(1),
          ") and ", e->path, " (width ", e->vectors.size(1), ") are for different text encoders"));
    }
    used[name] = static_cast<int>(e->vectors.size(0));
    out.embeddings.push_back(std::move(e));
  }
  return Finish(ChunkPrompt(spans, tokenizer, used), std::move(out));
}

std::string EmbeddingHashes(const std::vector<std::shared_ptr<const Embedding>>& embeddings) {
  std::string out;
  for (const auto& e : embeddings) {
    absl::StrAppend(&out, out.empty() ? "" : ", ", e->name, ": ", e->sha256.substr(0, 10));
  }
  return out;
}

}  // namespace sd

// A prompt made ready for the text encoder: weighting parsed, textual-inversion words found and
// their files loaded, chunked (prompt_chunks.h). What the TokenizePrompt node computes, and what a
// front end asks to record the embeddings a prompt used (PNG `TI hashes`).
//
//   SD_ASSIGN_OR_RETURN(PreparedPrompt p, PreparePrompt(text, PromptWeighting::kA1111, *tok,
//   lib.get()));
#pragma once

#include <torch/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nodes/text/prompt_chunks.h"
#include "nodes/weights/embeddings.h"

namespace sd {

// Longer prompts are refused (about 200 chunks of 75 tokens: far past any use, well short of harm).
inline constexpr size_t kMaxPromptBytes = 64 * 1024;

struct PreparedPrompt {
  PromptChunks chunks;
  std::vector<std::shared_ptr<const Embedding>> embeddings;  // in chunks.embeddings' order
  // The embeddings' vectors stacked: float32 [1, rows, width] ([1, 0, 0] when none).
  torch::Tensor Vectors() const;
};

// `library` may be null (no embeddings). Errors: an embedding file that cannot be read, or
// embeddings of different widths, each naming the files.
absl::StatusOr<PreparedPrompt> PreparePrompt(const std::string& text, PromptWeighting mode,
                                             const ClipTokenizer& tokenizer,
                                             EmbeddingLibrary* library);

// "name: hash10, name2: hash10" as other tools write `TI hashes` ("" when none).
std::string EmbeddingHashes(const std::vector<std::shared_ptr<const Embedding>>& embeddings);

}  // namespace sd

// The CLIP BPE tokenizer of Stable Diffusion v1.x (byte-level BPE, 49408 tokens), matching the reference:
// text cleaning (HTML unescape twice, strip, whitespace collapse, Unicode lower-case), CLIP's
// pre-tokenizer pattern with Unicode letter/number classes (ICU), merges by rank, <|startoftext|> and
// <|endoftext|>, truncation to 75 + 2 tokens, padding with <|endoftext|>.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sd {

struct Tokenized {
  std::vector<int64_t> ids;  // context_length ids
  int prompt_tokens = 0;     // BPE tokens of the prompt, before truncation
  int truncated = 0;         // how many of them did not fit
};

class ClipTokenizer {
 public:
  static constexpr int kContextLength = 77;

  // Loads `dir`/vocab.json and `dir`/merges.txt, checking that they agree with each other.
  static absl::StatusOr<std::unique_ptr<ClipTokenizer>> Load(const std::string& dir);
  // Where the tokenizer files are found when no directory is named: $SDGRAPH_TOKENIZER, then
  // the install tree next to the executable (install_dirs.h), then the copy in the source tree.
  static std::string DefaultDir();

  Tokenized Encode(absl::string_view text, int context_length = kContextLength) const;
  // The cleaned, lower-cased text the BPE runs on (exposed for tests).
  static std::string Clean(absl::string_view text);
  // The pre-tokenizer's pieces of cleaned text.
  static std::vector<std::string> PreTokenize(const std::string& cleaned);
  // BPE token ids of a cleaned text, without start/end tokens.
  std::vector<int64_t> Bpe(const std::string& cleaned) const;

  int64_t start_id() const { return start_id_; }
  int64_t end_id() const { return end_id_; }
  size_t vocab_size() const { return vocab_.size(); }

 private:
  ClipTokenizer() = default;
  void BpeWord(const std::string& piece, std::vector<int64_t>* out) const;

  std::unordered_map<std::string, int64_t> vocab_;
  std::unordered_map<std::string, int> merge_rank_;  // "a b" -> rank
  std::string byte_symbol_[256];                      // byte -> its printable UTF-8 symbol
  int64_t start_id_ = 0, end_id_ = 0;
};

}  // namespace sd

#include "nodes/text/prompt_chunks.h"

#include <algorithm>

#include "absl/strings/str_split.h"

namespace sd {
namespace {

class Chunker {
 public:
  Chunker(const ClipTokenizer& tok, PromptChunks& out) : tok_(tok), out_(out) {}

  // Appends one word's tokens: to a fresh chunk when they don't fit in this one, split only when
  // they are longer than a chunk.
  void Add(const std::vector<int64_t>& ids, float weight) {
    out_.prompt_tokens += static_cast<int>(ids.size());
    const bool fits_a_chunk = ids.size() <= static_cast<size_t>(kChunkTokens);
    if (fits_a_chunk && ids_.size() + ids.size() > static_cast<size_t>(kChunkTokens)) Close();
    for (int64_t id : ids) {
      if (ids_.size() == static_cast<size_t>(kChunkTokens)) Close();
      ids_.push_back(id);
      weights_.push_back(weight);
    }
  }
  void Close() {
    std::vector<int64_t> ids{tok_.start_id()};
    std::vector<float> weights{1.0f};
    ids.insert(ids.end(), ids_.begin(), ids_.end());
    weights.insert(weights.end(), weights_.begin(), weights_.end());
    ids.resize(ClipTokenizer::kContextLength, tok_.end_id());
    weights.resize(ClipTokenizer::kContextLength, 1.0f);
    out_.ids.push_back(std::move(ids));
    out_.weights.push_back(std::move(weights));
    ids_.clear();
    weights_.clear();
  }
  void Finish() {
    if (!ids_.empty() || out_.ids.empty()) Close();
  }

 private:
  const ClipTokenizer& tok_;
  PromptChunks& out_;
  std::vector<int64_t> ids_;
  std::vector<float> weights_;
};

// The ids of embedding `name` (count vectors), registering it on first use.
std::vector<int64_t> EmbeddingIds(const std::string& name, int count, const ClipTokenizer& tok,
                                  PromptChunks& out) {
  auto it = std::find(out.embeddings.begin(), out.embeddings.end(), name);
  int offset = 0;
  if (it == out.embeddings.end()) {
    offset = out.vector_rows;
    out.embeddings.push_back(name);
    out.vector_offset.push_back(offset);
    out.vector_rows += count;
  } else {
    offset = out.vector_offset[static_cast<size_t>(it - out.embeddings.begin())];
  }
  std::vector<int64_t> ids;
  const int64_t base = static_cast<int64_t>(tok.vocab_size()) + offset;
  for (int v = 0; v < count; ++v) ids.push_back(base + v);
  return ids;
}

}  // namespace

std::vector<int64_t> EmptyChunk(const ClipTokenizer& tokenizer) {
  std::vector<int64_t> ids(ClipTokenizer::kContextLength, tokenizer.end_id());
  ids[0] = tokenizer.start_id();
  return ids;
}

void PadChunks(PromptChunks& c, size_t count, const ClipTokenizer& tokenizer) {
  while (c.ids.size() < count) {
    c.ids.push_back(EmptyChunk(tokenizer));
    c.weights.emplace_back(ClipTokenizer::kContextLength, 1.0f);
  }
}

PromptChunks ChunkPrompt(const std::vector<PromptSpan>& spans, const ClipTokenizer& tokenizer,
                         const std::map<std::string, int>& embeddings) {
  // Names match as sequences of the pre-tokenizer's pieces ("mystyle," is "mystyle" then ",").
  std::map<std::vector<std::string>, std::pair<std::string, int>> by_pieces;
  size_t longest = 0;
  for (const auto& [name, count] : embeddings) {
    std::vector<std::string> pieces = ClipTokenizer::PreTokenize(name);
    longest = std::max(longest, pieces.size());
    if (!pieces.empty()) by_pieces[std::move(pieces)] = {name, count};
  }
  PromptChunks out;
  Chunker chunker(tokenizer, out);
  for (const PromptSpan& span : spans) {
    if (span.is_break) {
      chunker.Close();
      continue;
    }
    const float weight = static_cast<float>(span.weight);
    std::vector<std::string> pieces;
    std::vector<bool> word_start;
    for (absl::string_view word :
         absl::StrSplit(ClipTokenizer::Clean(span.text), ' ', absl::SkipEmpty())) {
      std::vector<std::string> word_pieces = ClipTokenizer::PreTokenize(std::string(word));
      for (size_t j = 0; j < word_pieces.size(); ++j) {
        word_start.push_back(j == 0);
        pieces.push_back(std::move(word_pieces[j]));
      }
    }
    std::vector<int64_t> word;  // the tokens of the word being read, added whole
    for (size_t i = 0; i < pieces.size();) {
      size_t matched = 0;
      for (size_t n = std::min(longest, pieces.size() - i); n > 0 && !matched; --n) {
        auto it =
            by_pieces.find(std::vector<std::string>(pieces.begin() + i, pieces.begin() + i + n));
        if (it == by_pieces.end()) continue;
        chunker.Add(word, weight);
        word.clear();
        chunker.Add(EmbeddingIds(it->second.first, it->second.second, tokenizer, out), weight);
        matched = n;
      }
      if (matched) {
        i += matched;
        continue;
      }
      if (word_start[i]) {
        chunker.Add(word, weight);
        word.clear();
      }
      const std::vector<int64_t> ids = tokenizer.Bpe(pieces[i]);
      word.insert(word.end(), ids.begin(), ids.end());
      ++i;
    }
    chunker.Add(word, weight);
  }
  chunker.Finish();
  return out;
}

}  // namespace sd

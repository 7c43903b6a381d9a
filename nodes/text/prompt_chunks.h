// A weighted prompt as CLIP chunks: each chunk is <start> + 75 tokens + <end> (padded with <end>),
// encoded separately; the encodings are then concatenated along the sequence axis (77·k tokens).
//
//   - BREAK ends the current chunk (and makes an empty one when the current chunk is empty);
//   - a word is never split across chunks unless it alone is longer than a chunk;
//   - a textual-inversion word (a whole word, or run of words, equal to an embedding's name)
//   becomes
//     its vectors, never split: their ids are vocab_size + the vector's row in `vectors` (the rows
//     of the embeddings used, in order of first use).
//
//   PromptChunks c = ChunkPrompt(ParsePrompt(text, mode), tokenizer, embeddings);
//   // c.ids[k]: 77 ids, c.weights[k]: 77 weights (1 for <start>, <end> and padding)
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "nodes/text/clip_tokenizer.h"
#include "nodes/text/prompt_parser.h"

namespace sd {

struct PromptChunks {
  std::vector<std::vector<int64_t>> ids;    // k chunks of 77 ids
  std::vector<std::vector<float>> weights;  // k chunks of 77 weights
  // The embeddings used, in order of first use; embedding i's vectors are rows
  // [vector_offset[i], vector_offset[i] + its count) of the vector table.
  std::vector<std::string> embeddings;
  std::vector<int> vector_offset;
  int vector_rows = 0;
  int prompt_tokens = 0;  // tokens of the prompt, embedding vectors included (no <start>/<end>)
};

inline constexpr int kChunkTokens = ClipTokenizer::kContextLength - 2;  // 75

// `embeddings` maps an embedding's name, as ClipTokenizer::Clean makes it (lower case, single
// spaces), to its vector count (1..75).
PromptChunks ChunkPrompt(const std::vector<PromptSpan>& spans, const ClipTokenizer& tokenizer,
                         const std::map<std::string, int>& embeddings);

// Appends chunks of the empty prompt (weights 1) until `c` has `count` chunks.
void PadChunks(PromptChunks& c, size_t count, const ClipTokenizer& tokenizer);
// The empty prompt's chunk: <start>, then <end> to the end.
std::vector<int64_t> EmptyChunk(const ClipTokenizer& tokenizer);

}  // namespace sd

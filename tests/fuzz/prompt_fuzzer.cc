// libFuzzer target: a prompt as users type it, through everything that reads one before the model:
// <lora:> tags, the weighting syntax (the first byte picks the dialect), chunking with
// textual-inversion words, and the model reference parser. Checks what the encoder relies on: rows
// of 77 ids starting with <start>, a weight per id, and the parsed text never longer than the
// input.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>

#include "nodes/text/prompt_chunks.h"
#include "nodes/text/prompt_parser.h"
#include "nodes/weights/model_ref.h"

namespace {

const sd::ClipTokenizer& Tokenizer() {
  static const sd::ClipTokenizer* t = [] {
    auto loaded = sd::ClipTokenizer::Load(sd::ClipTokenizer::DefaultDir());
    if (!loaded.ok()) std::abort();
    return loaded->release();
  }();
  return *t;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > 8192) return 0;
  const sd::PromptWeighting mode = static_cast<sd::PromptWeighting>(data[0] % 3);
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  (void)sd::ModelRef::Parse(text);
  std::vector<sd::LoraTag> tags;
  auto words = sd::StripLoraTags(text, &tags);
  if (!words.ok()) return 0;
  if (mode == sd::PromptWeighting::kComfy) {  // ComfyUI's embedding:NAME words only ever shrink
    const std::string named = sd::ComfyEmbeddingWords(*words);
    if (named.size() > words->size()) std::abort();
    *words = named;
  }
  if (words->size() > text.size()) std::abort();
  const std::vector<sd::PromptSpan> spans = sd::ParsePrompt(*words, mode);
  size_t chars = 0;
  for (const sd::PromptSpan& s : spans) chars += s.text.size();
  if (spans.empty() || chars > words->size()) std::abort();
  static const std::map<std::string, int> embeddings = {
      {"mystyle", 3}, {"two words", 2}, {"long", 75}};
  const sd::PromptChunks c = sd::ChunkPrompt(spans, Tokenizer(), embeddings);
  if (c.ids.empty() || c.ids.size() != c.weights.size()) std::abort();
  const int64_t limit = static_cast<int64_t>(Tokenizer().vocab_size()) + c.vector_rows;
  for (size_t k = 0; k < c.ids.size(); ++k) {
    if (c.ids[k].size() != 77 || c.weights[k].size() != 77 || c.ids[k][0] != Tokenizer().start_id())
      std::abort();
    for (int64_t id : c.ids[k]) {
      if (id < 0 || id >= limit) std::abort();
    }
  }
  return 0;
}

// Prompt weighting as users type it, in the two dialects they come from:
//
//   (word)  x1.1     ((word))  x1.21     [word]  /1.1     (word:1.3)     \( \) literal brackets
//   BREAK   (in capitals, a word of its own) ends the current 75-token chunk
//
//   kA1111: AUTOMATIC1111's rules. Round and square brackets are counted separately; an explicit
//           `:w)` multiplies with the brackets around it; `\(` `\)` `\[` `\]` `\\` are escapes.
//   kComfy: ComfyUI's rules. `(text:w)` replaces the weight of the brackets around it (brackets
//           inside still multiply, x1.1 each); the weight is the number after the group's last
//           colon; square brackets are literal text; `\(` `\)` are escapes.
//   kNone:  no weighting: every character is text (BREAK still ends a chunk).
// In every mode brackets left open are closed at the end of the prompt and a `)` or `]` that closes
// nothing is literal text.
//
//   std::vector<PromptSpan> spans = ParsePrompt("a (red:1.3) [circle]", PromptWeighting::kA1111);
//   // {"a ", 1}, {"red", 1.3}, {" ", 1}, {"circle", 0.909...}
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sd {

enum class PromptWeighting { kA1111, kComfy, kNone };

// "a1111" (also ""), "comfy" or "none"; INVALID_ARGUMENT naming the choices otherwise.
absl::StatusOr<PromptWeighting> ParsePromptWeighting(absl::string_view name);
const char* PromptWeightingName(PromptWeighting mode);

struct PromptSpan {
  std::string text;  // raw text (escapes resolved), to be cleaned and tokenized
  double weight = 1.0;
  bool is_break = false;  // a BREAK: `text` is empty

  bool operator==(const PromptSpan& o) const {
    return text == o.text && weight == o.weight && is_break == o.is_break;
  }
};

// The prompt as runs of text with their weights, in order; adjacent runs of equal weight are
// merged (so they tokenize as one text). An empty prompt is one empty span of weight 1.
std::vector<PromptSpan> ParsePrompt(absl::string_view prompt, PromptWeighting mode);

// A `<lora:NAME>` tag of a prompt, as AUTOMATIC1111 writes them: <lora:NAME:W> puts W on the text
// encoder and the UNet, <lora:NAME:TE:UNET> one each; te=W / unet=W name them.
struct LoraTag {
  std::string name;
  double text = 1.0, unet = 1.0;
};

// The prompt without its <lora:...> tags (they are instructions, not words), and the tags. A tag
// whose strengths are not numbers is INVALID_ARGUMENT naming it.
absl::StatusOr<std::string> StripLoraTags(absl::string_view prompt, std::vector<LoraTag>* tags);

// ComfyUI names a textual-inversion embedding in a prompt as `embedding:NAME` (NAME may carry its
// file's extension, .pt, .safetensors or .bin); this gives the prompt with each such word replaced
// by NAME, the word an embedding library matches. NAME ends at whitespace or a comma.
std::string ComfyEmbeddingWords(absl::string_view prompt);

}  // namespace sd

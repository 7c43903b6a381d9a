#include <cstdio>

#include "absl/strings/str_join.h"
#include "host_plugin/cli/commands.h"
#include "host_plugin/cli/common.h"
#include "nodes/text/clip_tokenizer.h"

namespace sd::cli {

namespace {
constexpr char kHelp[] =
    "usage: sd-graph tokenize [--tokenizer DIR] TEXT...\n"
    "\n"
    "Prints, for each TEXT, one line holding a JSON array of the 77 CLIP token ids Stable Diffusion v1.x\n"
    "conditions on: <|startoftext|>, up to 75 BPE tokens, <|endoftext|>, padding with <|endoftext|>.\n"
    "A warning on stderr says how many tokens were cut from a longer prompt.\n"
    "\n"
    "  --tokenizer DIR   folder with vocab.json and merges.txt (default: $SDGRAPH_TOKENIZER, else the\n"
    "                    copy installed beside sd-graph, else the one in the source tree)\n";
}  // namespace

int TokenizeCommand(const std::vector<std::string>& argv) {
  int code = kExitOk;
  auto args = ParseCommandLine("tokenize", argv, {{"tokenizer"}, {}}, kHelp, &code);
  if (!args) return code;
  if (args->positionals().empty()) {
    std::fprintf(stderr, "sd-graph tokenize: no TEXT given\n\n%s", kHelp);
    return kExitUsage;
  }
  auto tokenizer = ClipTokenizer::Load(args->GetOr("tokenizer", ClipTokenizer::DefaultDir()));
  if (!tokenizer.ok()) return Fail("tokenize", tokenizer.status());
  for (size_t i = 0; i < args->positionals().size(); ++i) {
    Tokenized t = (*tokenizer)->Encode(args->positionals()[i]);
    if (t.truncated > 0) {
      std::fprintf(stderr, "sd-graph tokenize: warning: text %zu has %d tokens; the last %d were cut (75 fit)\n",
                   i + 1, t.prompt_tokens, t.truncated);
    }
    std::printf("[%s]\n", absl::StrJoin(t.ids, ", ").c_str());
  }
  return kExitOk;
}

}  // namespace sd::cli

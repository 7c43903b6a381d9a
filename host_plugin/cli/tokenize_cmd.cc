#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "host_plugin/cli/commands.h"
#include "host_plugin/cli/common.h"
#include "nodes/text/clip_tokenizer.h"
#include "nodes/text/prompt_chunks.h"
#include "nodes/text/prompt_parser.h"

namespace sd::cli {

namespace {
constexpr char kHelp[] =
    "usage: sd-graph tokenize [--tokenizer DIR] [--chunks [--weighting W]] TEXT...\n"
    "\n"
    "Prints, for each TEXT, one line holding a JSON array of the 77 CLIP token ids Stable "
    "Diffusion v1.x\n"
    "conditions on: <|startoftext|>, up to 75 BPE tokens, <|endoftext|>, padding with "
    "<|endoftext|>.\n"
    "A warning on stderr says how many tokens were cut from a longer prompt.\n"
    "\n"
    "  --chunks          instead, what the stock graphs encode (TokenizePrompt): one line per "
    "TEXT,\n"
    "                    {\"ids\": [[77 ids], ...], \"weights\": [[77 weights], ...]}, a row per "
    "75-token\n"
    "                    chunk, <lora:...> tags removed, weights parsed\n"
    "  --weighting W     with --chunks: a1111 (default), comfy or none\n"
    "  --tokenizer DIR   folder with vocab.json and merges.txt (default: $SDGRAPH_TOKENIZER, else "
    "the\n"
    "                    copy installed beside sd-graph, else the one in the source tree)\n";
int PrintChunks(const ClipTokenizer& tokenizer, const Args& args) {
  auto mode = ParsePromptWeighting(args.GetOr("weighting", "a1111"));
  if (!mode.ok()) return Fail("tokenize", mode.status());
  for (const std::string& text : args.positionals()) {
    auto words = StripLoraTags(text, nullptr);
    if (!words.ok()) return Fail("tokenize", words.status());
    const PromptChunks c = ChunkPrompt(ParsePrompt(*words, *mode), tokenizer, {});
    std::vector<std::string> ids, weights;
    for (size_t k = 0; k < c.ids.size(); ++k) {
      ids.push_back("[" + absl::StrJoin(c.ids[k], ", ") + "]");
      weights.push_back("[" +
                        absl::StrJoin(c.weights[k], ", ",
                                      [](std::string* out, float w) {
                                        absl::StrAppend(out, absl::StrFormat("%.9g", w));
                                      }) +
                        "]");
    }
    std::printf("{\"ids\": [%s], \"weights\": [%s]}\n", absl::StrJoin(ids, ", ").c_str(),
                absl::StrJoin(weights, ", ").c_str());
  }
  return kExitOk;
}

}  // namespace

int TokenizeCommand(const std::vector<std::string>& argv) {
  int code = kExitOk;
  auto args =
      ParseCommandLine("tokenize", argv, {{"tokenizer", "weighting"}, {"chunks"}}, kHelp, &code);
  if (!args) return code;
  if (args->positionals().empty()) {
    std::fprintf(stderr, "sd-graph tokenize: no TEXT given\n\n%s", kHelp);
    return kExitUsage;
  }
  auto tokenizer = ClipTokenizer::Load(args->GetOr("tokenizer", ClipTokenizer::DefaultDir()));
  if (!tokenizer.ok()) return Fail("tokenize", tokenizer.status());
  if (args->Has("chunks")) return PrintChunks(**tokenizer, *args);
  if (args->Has("weighting")) {
    std::fprintf(stderr, "sd-graph tokenize: --weighting applies to --chunks\n");
    return kExitUsage;
  }
  for (size_t i = 0; i < args->positionals().size(); ++i) {
    Tokenized t = (*tokenizer)->Encode(args->positionals()[i]);
    if (t.truncated > 0) {
      std::fprintf(
          stderr,
          "sd-graph tokenize: warning: text %zu has %d tokens; the last %d were cut (75 fit; the "
          "stock graphs encode it whole, in chunks: see --chunks)\n",
          i + 1, t.prompt_tokens, t.truncated);
    }
    std::printf("[%s]\n", absl::StrJoin(t.ids, ", ").c_str());
  }
  return kExitOk;
}

}  // namespace sd::cli

// Long prompts, weighting, clip skip and textual inversion through the node kinds, on a tiny
// checkpoint, against tests/python/prompt_reference.py: an independent implementation in Python
// (AUTOMATIC1111's regular expression and ComfyUI's recursion for the syntax, plain torch for the
// weighting arithmetic and for CLIP's text tower).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "nodes/base/status_macros.h"
#include "nodes/ops/model_cache.h"
#include "nodes/ops/node.h"
#include "nodes/text/prompt_parser.h"
#include "nodes/weights/checkpoint.h"
#include "nodes/weights/safetensors.h"
#include "nodes/weights/test_weights.h"
#include "nodes/weights/torch_tensors.h"
#include "tests/node_runner.h"
#include "tests/test_util.h"
#include "tests/tiny_checkpoint.h"

namespace sd {
namespace {

using ::testing::HasSubstr;
constexpr char kTokenEmbedding[] =
    "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight";

using testing::ReadTensor;
using testing::RunNode;

void WriteTensors(const std::string& path, const std::map<std::string, torch::Tensor>& tensors) {
  std::vector<torch::Tensor> keep;
  std::vector<TensorToWrite> w;
  for (const auto& [name, t] : tensors) {
    keep.push_back(t.contiguous());
    w.push_back(ToWrite(name, keep.back()).value());
  }
  ASSERT_TRUE(WriteSafetensors(path, w).ok());
}

void RunPython(const std::string& args) {
  ASSERT_EQ(std::system((testing::PythonScript("prompt_reference.py") + " " + args).c_str()), 0)
      << args;
}

class PromptEncodeTest : public testing::TinyCheckpointTest {
 protected:
  static void SetUpTestSuite() {
    TinyCheckpointTest::SetUpTestSuite();
    std::filesystem::create_directory(dir_->File("emb"));
  }
  static RunContext Context() {
    RunContext ctx;
    ctx.checkpoint = TinyPath();
    ctx.tokenizer_dir = testing::TokenizerDir();
    ctx.embeddings_dir = dir_->File("emb");
    static std::shared_ptr<ModelCache> models = std::make_shared<ModelCache>();
    ctx.models = models;
    return ctx;
  }
  static int64_t Width() { return SdConfig::Tiny().clip.width; }
  // TokenizePrompt's outputs for `text` (and `other`) under `weighting`.
  static NodeOutputs Tokens(const std::string& text, const std::string& weighting,
                            const std::string& other = "") {
    RunContext ctx = Context();
    std::map<std::string, Value> in{{"text", text}, {"weighting", weighting}};
    if (!other.empty()) in["other"] = other;
    auto out = RunNode("TokenizePrompt", ctx, in);
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? *out : NodeOutputs{};
  }
  static absl::StatusOr<torch::Tensor> Encode(const NodeOutputs& tok, int64_t clip_skip = 1) {
    RunContext ctx = Context();
    SD_ASSIGN_OR_RETURN(NodeOutputs out, RunNode("ClipEncode", ctx,
                                                 {{"tokens", tok.at("tokens")},
                                                  {"vectors", tok.at("vectors")},
                                                  {"clip_skip", clip_skip}}));
    return std::get<torch::Tensor>(out.at("context"));
  }
  static torch::Tensor T(const NodeOutputs& o, const char* port) {
    return std::get<torch::Tensor>(o.at(port));
  }
};

const std::vector<std::string>& TrickyPrompts() {
  static const std::vector<std::string> p = {"a (red) circle",
                                             "((red)) [[blue]] (green:1.3)",
                                             "((red:1.3))",
                                             "((red):1.3)",
                                             "(a (b:.5) c:2)",
                                             "(red: -0.5 )",
                                             "(a:1.2:1.3)",
                                             "a:1.3) b",
                                             R"(\(x\) \[y\] a\\b c\d)",
                                             "(open [both",
                                             "a ) b ]",
                                             "([a)]",
                                             "[a (b] c)",
                                             "(:1.5)",
                                             "a BREAK b",
                                             "BREAK (x BREAK y) BREAKFAST",
                                             "(a:1.2.3)",
                                             "((a) b:0.25) c",
                                             "",
                                             "plain text, nothing special",
                                             "(((deep))) ((and:0.9)) [(mixed:1.2)]",
                                             "(a:(b))",
                                             "a\\",
                                             "((x)"};
  return p;
}

TEST_F(PromptEncodeTest, ParserMatchesTheReferenceOnTrickyPrompts) {
  testing::WriteFile(dir_->File("prompts.json"), nlohmann::json(TrickyPrompts()).dump());
  RunPython("parse " + dir_->File("prompts.json") + " " + dir_->File("spans.json"));
  const nlohmann::json ref = nlohmann::json::parse(testing::ReadFile(dir_->File("spans.json")));
  for (const auto& [mode, name] :
       {std::pair{PromptWeighting::kA1111, "a1111"}, std::pair{PromptWeighting::kComfy, "comfy"}}) {
    for (size_t i = 0; i < TrickyPrompts().size(); ++i) {
      const std::vector<PromptSpan> got = ParsePrompt(TrickyPrompts()[i], mode);
      const nlohmann::json& want = ref[name][i];
      ASSERT_EQ(got.size(), want.size())
          << name << ": " << TrickyPrompts()[i] << "\nwant " << want.dump();
      for (size_t j = 0; j < got.size(); ++j) {
        EXPECT_EQ(got[j].text, want[j][0].get<std::string>()) << name << ": " << TrickyPrompts()[i];
        EXPECT_NEAR(got[j].weight, want[j][1].get<double>(), 1e-12)
            << name << ": " << TrickyPrompts()[i];
        EXPECT_EQ(got[j].is_break, want[j][2].get<bool>()) << name << ": " << TrickyPrompts()[i];
      }
    }
  }
}

// The encoder's chunks, weighted by ApplyPromptWeights in each mode, equal the reference's
// weighting of the same encoder outputs.
TEST_F(PromptEncodeTest, WeightingMatchesTheReferenceInBothModes) {
  std::string long_prompt = "a (red:1.4) circle on a [blue] background, ";
  for (int i = 0; i < 12; ++i) long_prompt += "((detailed)) sharp shapes, ";
  for (const std::string& prompt : {std::string("a (red:1.4) circle, [[blue]] (background:0.5)"),
                                    long_prompt, std::string("plain words only")}) {
    for (const char* mode : {"a1111", "comfy"}) {
      const NodeOutputs tok = Tokens(prompt, mode);
      auto context = Encode(tok);
      ASSERT_TRUE(context.ok()) << context.status();
      RunContext ctx = Context();
      auto weighted = RunNode("ApplyPromptWeights", ctx,
                              {{"context", *context},
                               {"weights", tok.at("weights")},
                               {"weighting", std::string(mode)}});
      ASSERT_TRUE(weighted.ok()) << weighted.status();
      const torch::Tensor got = T(*weighted, "context");
      const int64_t k = T(tok, "weights").size(0);
      EXPECT_EQ(got.sizes(), (std::vector<int64_t>{1, 77 * k, Width()}));
      // The reference needs the empty prompt's row for comfy; under a1111 give it one too.
      torch::Tensor rows = *context;
      if (std::string(mode) == "a1111")
        rows = torch::cat({rows, *Encode(Tokens("", "comfy"))}).slice(0, 0, k + 1);
      WriteTensors(dir_->File("w_in.safetensors"),
                   {{"context", rows}, {"weights", T(tok, "weights")}});
      RunPython("weight " + dir_->File("w_in.safetensors") + " " + dir_->File("w_out.safetensors"));
      const torch::Tensor want = ReadTensor(dir_->File("w_out.safetensors"), mode);
      EXPECT_LT((got - want).abs().max().item<double>(), 1e-5) << mode << ": " << prompt;
      if (prompt == "plain words only") {
        EXPECT_TRUE(torch::equal(got[0], context->slice(0, 0, k).reshape({77 * k, -1})));
      }
    }
  }
}

// A long prompt is its chunks, each encoded on its own; the negative prompt gets empty chunks to
// match.
TEST_F(PromptEncodeTest, LongPromptsAreChunksPaddedToThePair) {
  std::string prompt;
  for (int i = 0; i < 40; ++i) prompt += "red circle, ";
  const NodeOutputs tok = Tokens(prompt, "a1111", "short");
  const NodeOutputs neg = Tokens("short", "a1111", prompt);
  ASSERT_EQ(T(tok, "tokens").size(0), 2);
  ASSERT_EQ(T(neg, "tokens").size(0), 2);
  const torch::Tensor empty = T(Tokens("", "a1111"), "tokens")[0];
  EXPECT_TRUE(torch::equal(T(neg, "tokens")[1], empty));
  const torch::Tensor both = *Encode(tok);
  for (int64_t k = 0; k < 2; ++k) {
    const torch::Tensor alone =
        *Encode({{"tokens", T(tok, "tokens").slice(0, k, k + 1)}, {"vectors", T(tok, "vectors")}});
    // Equal up to f32 rounding: a batch of two and a batch of one go through matrix products the
    // BLAS may block differently (it does on AVX2-only CPUs: 1.3e-6 apart).
    EXPECT_LT((both[k] - alone[0]).abs().max().item<double>(), 1e-5);
  }
  // Comfy adds the empty prompt's row after the chunks.
  const NodeOutputs comfy = Tokens(prompt, "comfy");
  ASSERT_EQ(T(comfy, "tokens").size(0), 3);
  EXPECT_TRUE(torch::equal(T(comfy, "tokens")[2], empty));
}

// Embedding files in the formats found in the wild; the vectors stand where the word was.
TEST_F(PromptEncodeTest, TextualInversionFilesAndClipSkipMatchTheReference) {
  const std::string emb = dir_->File("emb");
  // "shapestyle": the token embeddings of "red circle" (2 vectors), so it must encode as those
  // words.
  const torch::Tensor table = ReadTensor(TinyPath(), kTokenEmbedding);
  auto tokenizer = ClipTokenizer::Load(testing::TokenizerDir()).value();
  const std::vector<int64_t> red_circle = tokenizer->Bpe("red circle");
  WriteTensors(emb + "/ShapeStyle.safetensors",
               {{"emb_params", table.index_select(0, torch::tensor(red_circle))}});
  RunPython("ti-pt " + emb + "/a1111style.pt 3 " + std::to_string(Width()) + " 7");
  WriteTensors(emb + "/single.bin", {{"whatever", torch::randn({1, Width()})}});
  const torch::Tensor as_words = *Encode(Tokens("a red circle on blue", "a1111"));
  const NodeOutputs tok = Tokens("a shapestyle on blue", "a1111");
  EXPECT_EQ(T(tok, "vectors").sizes(), (std::vector<int64_t>{1, 2, Width()}));
  EXPECT_LT((*Encode(tok) - as_words).abs().max().item<double>(), 1e-6);
  // ComfyUI's syntax for it (comfy weighting): embedding:NAME, with or without the extension.
  for (const char* comfy :
       {"a embedding:ShapeStyle on blue", "a embedding:ShapeStyle.safetensors on blue"}) {
    const NodeOutputs c = Tokens(comfy, "comfy");
    EXPECT_EQ(T(c, "vectors").sizes(), (std::vector<int64_t>{1, 2, Width()})) << comfy;
    EXPECT_TRUE(torch::equal(T(c, "tokens")[0], T(tok, "tokens")[0])) << comfy;
  }
  // The A1111 .pt (a pickled Parameter inside string_to_param), with clip skip, against plain
  // torch.
  for (int64_t skip : {1, 2}) {
    const NodeOutputs t = Tokens("(a1111style:1.2), a single circle", "a1111");
    EXPECT_EQ(T(t, "vectors").size(1), 4);
    WriteTensors(dir_->File("c_in.safetensors"), {{"tokens", T(t, "tokens")},
                                                  {"vectors", T(t, "vectors")[0]},
                                                  {"clip_skip", torch::tensor({skip})}});
    RunPython("clip " + TinyPath() + " " + std::to_string(SdConfig::Tiny().clip.heads) + " " +
              dir_->File("c_in.safetensors") + " " + dir_->File("c_out.safetensors"));
    const torch::Tensor got = *Encode(t, skip);
    EXPECT_LT(
        (got - ReadTensor(dir_->File("c_out.safetensors"), "context")).abs().max().item<double>(),
        1e-4)
        << "clip skip " << skip;
  }
  EXPECT_FALSE(torch::allclose(*Encode(tok, 2), *Encode(tok, 1)));
}

TEST_F(PromptEncodeTest, BadEmbeddingsAndSettingsAreClearErrors) {
  testing::TempDir bad;
  RunContext ctx = Context();
  ctx.embeddings_dir = bad.path();
  WriteTensors(bad.File("wide.safetensors"), {{"emb_params", torch::randn({2, Width() + 8})}});
  WriteTensors(bad.File("many.safetensors"), {{"emb_params", torch::randn({76, Width()})}});
  WriteTensors(bad.File("two.safetensors"),
               {{"a", torch::randn({1, Width()})}, {"b", torch::randn({1, Width()})}});
  WriteTensors(bad.File("dup.safetensors"), {{"emb_params", torch::randn({1, Width()})}});
  WriteTensors(bad.File("dup.pt"), {{"emb_params", torch::randn({1, Width()})}});
  auto tokens = [&](const std::string& text) {
    return RunNode("TokenizePrompt", ctx, {{"text", text}});
  };
  EXPECT_THAT(std::string(tokens("many").status().message()), HasSubstr("many.safetensors"));
  EXPECT_THAT(std::string(tokens("many").status().message()), HasSubstr("76 vectors"));
  EXPECT_THAT(std::string(tokens("two").status().message()),
              HasSubstr("two.safetensors: no textual-inversion vectors"));
  EXPECT_THAT(std::string(tokens("dup").status().message()), HasSubstr("keep one"));
  auto wide = tokens("wide");
  ASSERT_TRUE(wide.ok()) << wide.status();
  auto encoded = RunNode("ClipEncode", ctx,
                         {{"tokens", wide->at("tokens")}, {"vectors", wide->at("vectors")}});
  EXPECT_EQ(encoded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(encoded.status().message()), HasSubstr("another model"));
  // Clip skip beyond the encoder's layers, and weights that do not fit the context.
  auto plain = tokens("x");
  EXPECT_THAT(std::string(RunNode("ClipEncode", ctx,
                                  {{"tokens", plain->at("tokens")}, {"clip_skip", int64_t{99}}})
                              .status()
                              .message()),
              HasSubstr("clip skip 99"));
  auto mismatch = RunNode("ApplyPromptWeights", ctx,
                          {{"context", torch::zeros({2, 77, Width()})},
                           {"weights", torch::ones({2, 77})},
                           {"weighting", std::string("comfy")}});
  EXPECT_THAT(std::string(mismatch.status().message()), HasSubstr("same weighting"));
  ctx.embeddings_dir = bad.File("missing");
  EXPECT_EQ(tokens("x").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace sd

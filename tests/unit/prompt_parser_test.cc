// Prompt weighting syntax (both dialects) and 75-token chunking, against hand-worked answers. The
// same parser is also checked against an independent Python implementation in
// prompt_encode_test.cc.
#include "nodes/text/prompt_parser.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "nodes/text/prompt_chunks.h"
#include "tests/test_util.h"

namespace sd {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

MATCHER_P2(Span, text, weight, "") {
  return !arg.is_break && arg.text == text && std::abs(arg.weight - weight) < 1e-12;
}
MATCHER(Break, "") { return arg.is_break; }

std::vector<PromptSpan> A(const std::string& p) { return ParsePrompt(p, PromptWeighting::kA1111); }
std::vector<PromptSpan> C(const std::string& p) { return ParsePrompt(p, PromptWeighting::kComfy); }

TEST(PromptParserTest, A1111Brackets) {
  EXPECT_THAT(A("a (red) circle"),
              ElementsAre(Span("a ", 1.0), Span("red", 1.1), Span(" circle", 1.0)));
  EXPECT_THAT(A("((red))"), ElementsAre(Span("red", 1.1 * 1.1)));
  EXPECT_THAT(A("[red]"), ElementsAre(Span("red", 1 / 1.1)));
  EXPECT_THAT(A("(red:1.3)"), ElementsAre(Span("red", 1.3)));
  EXPECT_THAT(A("((red:1.3))"),
              ElementsAre(Span("red", 1.3 * 1.1)));  // an explicit weight multiplies
  EXPECT_THAT(A("(red:.5)"), ElementsAre(Span("red", 0.5)));
  EXPECT_THAT(A("(red: -0.5 )"), ElementsAre(Span("red", -0.5)));
  EXPECT_THAT(A("(a:1.2:1.3)"), ElementsAre(Span("a:1.2", 1.3)));
  EXPECT_THAT(A("a:1.3) b"), ElementsAre(Span("a:1.3) b", 1.0)));  // nothing to close: text
  EXPECT_THAT(A("(a:1.2.3)"), ElementsAre(Span("a:1.2.3", 1.1)));  // not a number: text
}

TEST(PromptParserTest, A1111EscapesAndUnbalanced) {
  EXPECT_THAT(A(R"(\(x\) \[y\] a\\b c\d)"), ElementsAre(Span(R"((x) [y] a\b c\d)", 1.0)));
  EXPECT_THAT(A("(open [both"), ElementsAre(Span("open ", 1.1), Span("both", 1.1 / 1.1)));
  EXPECT_THAT(A("a ) b ]"), ElementsAre(Span("a ) b ]", 1.0)));
  // Round and square brackets are counted separately, as AUTOMATIC1111 does.
  EXPECT_THAT(A("([a)]"), ElementsAre(Span("a", 1.1 / 1.1)));
}

TEST(PromptParserTest, ComfyBrackets) {
  EXPECT_THAT(C("a (red) circle"),
              ElementsAre(Span("a ", 1.0), Span("red", 1.1), Span(" circle", 1.0)));
  EXPECT_THAT(C("((red:1.3))"), ElementsAre(Span("red", 1.3)));  // an explicit weight replaces
  EXPECT_THAT(C("((red):1.3)"), ElementsAre(Span("red", 1.3 * 1.1)));
  EXPECT_THAT(C("(a (b:.5) c:2)"), ElementsAre(Span("a ", 2.0), Span("b", 0.5), Span(" c", 2.0)));
  EXPECT_THAT(C("[red]"), ElementsAre(Span("[red]", 1.0)));  // square brackets are text
  EXPECT_THAT(C(R"(\(x\) (y)"), ElementsAre(Span("(x) ", 1.0), Span("y", 1.1)));
  EXPECT_THAT(C("(:1.5)"), ElementsAre(Span(":1.5", 1.1)));  // a colon first is text
  EXPECT_THAT(C("a) (b"), ElementsAre(Span("a) ", 1.0), Span("b", 1.1)));
}

TEST(PromptParserTest, BreaksAndNone) {
  EXPECT_THAT(A("a BREAK b"), ElementsAre(Span("a", 1.0), Break(), Span("b", 1.0)));
  EXPECT_THAT(A("BREAKFAST BREAK_ xBREAK"), ElementsAre(Span("BREAKFAST BREAK_ xBREAK", 1.0)));
  EXPECT_THAT(A("(a BREAK b)"), ElementsAre(Span("a", 1.1), Break(), Span("b", 1.1)));
  EXPECT_THAT(ParsePrompt("(a) BREAK [b]", PromptWeighting::kNone),
              ElementsAre(Span("(a)", 1.0), Break(), Span("[b]", 1.0)));
  EXPECT_THAT(A(""), ElementsAre(Span("", 1.0)));
  EXPECT_EQ(ParsePromptWeighting("Comfy").value(), PromptWeighting::kComfy);
  EXPECT_THAT(std::string(ParsePromptWeighting("x").status().message()),
              HasSubstr("a1111, comfy or none"));
}

// Brackets nested deeper than 64 are text (with their closers), so a hostile prompt costs neither
// deep recursion nor quadratic work.
TEST(PromptParserTest, DeepNestingIsBoundedInBothDialects) {
  const std::string deep = std::string(100000, '(') + "x" + std::string(100000, ')');
  for (PromptWeighting mode : {PromptWeighting::kA1111, PromptWeighting::kComfy}) {
    const std::vector<PromptSpan> spans = ParsePrompt(deep, mode);
    std::string text;
    for (const PromptSpan& s : spans) text += s.text;
    EXPECT_EQ(text, std::string(100000 - 64, '(') + "x" + std::string(100000 - 64, ')'));
    for (const PromptSpan& s : spans) EXPECT_NEAR(s.weight, std::pow(1.1, 64), 1e-6);
  }
  // Below the bound nothing changes.
  EXPECT_THAT(A(std::string(64, '(') + "x"), ElementsAre(Span("x", std::pow(1.1, 64))));
  // A weight closing a bracket that was too deep is text too.
  EXPECT_THAT(A(std::string(65, '(') + "x:2)"), ElementsAre(Span("(x:2)", std::pow(1.1, 64))));
}

class PromptChunksTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tok_ = ClipTokenizer::Load(testing::TokenizerDir()).value().release();
  }
  static void TearDownTestSuite() { delete tok_; }
  static PromptChunks Chunk(const std::string& p, const std::map<std::string, int>& emb = {}) {
    return ChunkPrompt(ParsePrompt(p, PromptWeighting::kA1111), *tok_, emb);
  }
  static std::string Repeat(const std::string& word, int n) {
    std::string s;
    for (int i = 0; i < n; ++i) s += (i ? " " : "") + word;
    return s;
  }
  static const ClipTokenizer* tok_;
};
const ClipTokenizer* PromptChunksTest::tok_;

TEST_F(PromptChunksTest, ShortPromptIsTheTruncatingTokenizersRow) {
  for (const std::string p : {"a red circle on a blue background", "", "don't   STOP, (fine)!"}) {
    const std::string plain = p == "don't   STOP, (fine)!" ? "don't   STOP, fine!" : p;
    const PromptChunks c = Chunk(p);
    ASSERT_EQ(c.ids.size(), 1u) << p;
    EXPECT_EQ(c.ids[0], tok_->Encode(plain).ids) << p;
  }
}

TEST_F(PromptChunksTest, LongPromptsChunkAtWordsAndBreaks) {
  // "photorealistic" is several tokens: 30 of them cannot end exactly at a chunk's 75th token, and
  // none is split.
  const std::vector<int64_t> word = tok_->Bpe("photorealistic");
  ASSERT_GT(word.size(), 1u);
  const PromptChunks c = Chunk(Repeat("photorealistic", 30));
  const size_t per_chunk = kChunkTokens / word.size();
  ASSERT_EQ(c.ids.size(), (30 + per_chunk - 1) / per_chunk);
  for (const auto& row : c.ids) {
    ASSERT_EQ(row.size(), 77u);
    EXPECT_EQ(row[0], tok_->start_id());
    EXPECT_EQ(row[1], word[0]);  // every chunk starts at a word's first token
    EXPECT_EQ(row[76], tok_->end_id());
  }
  EXPECT_EQ(c.prompt_tokens, static_cast<int>(30 * word.size()));
  // Exactly 75 one-token words fill one chunk; the 76th starts a second.
  EXPECT_EQ(Chunk(Repeat("cat", 75)).ids.size(), 1u);
  EXPECT_EQ(Chunk(Repeat("cat", 76)).ids.size(), 2u);
  // BREAK: "a" alone, then "b"; a BREAK with nothing before it makes an empty chunk.
  const PromptChunks b = Chunk("a BREAK b");
  ASSERT_EQ(b.ids.size(), 2u);
  EXPECT_EQ(b.ids[0], tok_->Encode("a").ids);
  EXPECT_EQ(b.ids[1], tok_->Encode("b").ids);
  const PromptChunks lead = Chunk("BREAK b");
  ASSERT_EQ(lead.ids.size(), 2u);
  EXPECT_EQ(lead.ids[0], EmptyChunk(*tok_));
  EXPECT_EQ(Chunk("a BREAK").ids.size(), 1u);
}

TEST_F(PromptChunksTest, AWordLongerThanAChunkIsSplit) {
  const std::string huge(400, 'x');
  const std::vector<int64_t> ids = tok_->Bpe(huge);
  ASSERT_GT(ids.size(), 75u);
  const PromptChunks c = Chunk("a " + huge);
  // "a" then the huge word fills the rest of the first chunk and goes on in the next.
  EXPECT_EQ(c.ids[0][2], ids[0]);
  EXPECT_EQ(c.ids[1][1], ids[74]);
}

TEST_F(PromptChunksTest, WeightsFollowTheirTokens) {
  const PromptChunks c = Chunk("a (red:1.5) circle");
  const int64_t red = tok_->Bpe("red")[0];
  for (size_t i = 0; i < 77; ++i)
    EXPECT_FLOAT_EQ(c.weights[0][i], c.ids[0][i] == red ? 1.5f : 1.0f) << i;
}

TEST_F(PromptChunksTest, EmbeddingsAreWholeWordsNeverSplit) {
  const std::map<std::string, int> emb{{"mystyle", 3}, {"two words", 2}};
  const int64_t vocab = static_cast<int64_t>(tok_->vocab_size());
  PromptChunks c = Chunk("a mystyle circle, mystyle, mystyles two words", emb);
  ASSERT_EQ(c.embeddings, (std::vector<std::string>{"mystyle", "two words"}));
  EXPECT_EQ(c.vector_offset, (std::vector<int>{0, 3}));
  EXPECT_EQ(c.vector_rows, 5);
  const std::vector<int64_t>& r = c.ids[0];
  EXPECT_EQ(std::vector<int64_t>(r.begin() + 2, r.begin() + 5),
            (std::vector<int64_t>{vocab, vocab + 1, vocab + 2}));
  EXPECT_EQ(std::count(r.begin(), r.end(), vocab), 2);  // "mystyles" is another word
  EXPECT_EQ(std::count(r.begin(), r.end(), vocab + 3), 1);
  // 74 one-token words, then a 3-vector embedding: it moves whole to the second chunk.
  c = Chunk(Repeat("cat", 74) + " mystyle", emb);
  ASSERT_EQ(c.ids.size(), 2u);
  EXPECT_EQ(c.ids[0][75], tok_->end_id());
  EXPECT_EQ(std::vector<int64_t>(c.ids[1].begin() + 1, c.ids[1].begin() + 4),
            (std::vector<int64_t>{vocab, vocab + 1, vocab + 2}));
}

TEST_F(PromptChunksTest, PaddingAddsEmptyChunks) {
  PromptChunks c = Chunk("a");
  PadChunks(c, 3, *tok_);
  ASSERT_EQ(c.ids.size(), 3u);
  EXPECT_EQ(c.ids[2], EmptyChunk(*tok_));
  EXPECT_EQ(c.ids[2], tok_->Encode("").ids);
  EXPECT_EQ(c.weights[2], std::vector<float>(77, 1.0f));
}

// ComfyUI's `embedding:NAME` (with or without the file's extension) becomes the word NAME; the
// prefix inside another word stays text; a bare prefix is dropped.
TEST(PromptParserTest, ComfyEmbeddingWords) {
  EXPECT_EQ(ComfyEmbeddingWords("a embedding:EasyNegative, (embedding:style.pt:1.2) xembedding:no"),
            "a EasyNegative, (style:1.2) xembedding:no");
  EXPECT_EQ(ComfyEmbeddingWords("embedding:a.safetensors embedding:b.bin\tembedding:"), "a b\t");
  EXPECT_EQ(ComfyEmbeddingWords("no embeddings here"), "no embeddings here");
}

}  // namespace
}  // namespace sd

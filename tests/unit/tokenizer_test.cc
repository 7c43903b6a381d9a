#include "nodes/text/clip_tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "nodes/text/html_unescape.h"
#include "tests/test_util.h"

namespace sd {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto t = ClipTokenizer::Load(testing::TokenizerDir());
    ASSERT_TRUE(t.ok()) << t.status();
    tok_ = t->release();
  }
  static void TearDownTestSuite() { delete tok_; }
  static ClipTokenizer* tok_;
};
ClipTokenizer* TokenizerTest::tok_;

TEST_F(TokenizerTest, AllGoldenPromptsExact) {
  nlohmann::json golden = nlohmann::json::parse(testing::ReadFile(testing::GoldenDir() + "/tokenizer.json"));
  ASSERT_EQ(golden.size(), 10u);
  for (const auto& g : golden) {
    const std::string text = g["text"];
    Tokenized t = tok_->Encode(text);
    EXPECT_EQ(t.ids, g["ids"].get<std::vector<int64_t>>()) << "prompt: " << text;
  }
}

TEST_F(TokenizerTest, VocabularyAndSpecialTokens) {
  EXPECT_EQ(tok_->vocab_size(), 49408u);
  EXPECT_EQ(tok_->start_id(), 49406);
  EXPECT_EQ(tok_->end_id(), 49407);
}

TEST_F(TokenizerTest, TruncatesTo75AndReportsTheCut) {
  std::string text;
  for (int i = 0; i < 80; ++i) text += "cat ";
  Tokenized t = tok_->Encode(text);
  ASSERT_EQ(t.ids.size(), 77u);
  EXPECT_EQ(t.prompt_tokens, 80);
  EXPECT_EQ(t.truncated, 5);
  EXPECT_EQ(t.ids.front(), 49406);
  EXPECT_EQ(t.ids[75], tok_->Encode("cat").ids[1]);
  EXPECT_EQ(t.ids.back(), 49407);
  EXPECT_EQ(tok_->Encode("a cat").truncated, 0);
}

TEST_F(TokenizerTest, EmptyPromptIsStartEndAndPadding) {
  Tokenized t = tok_->Encode("");
  EXPECT_EQ(t.prompt_tokens, 0);
  EXPECT_EQ(t.ids[0], 49406);
  for (int i = 1; i < 77; ++i) EXPECT_EQ(t.ids[i], 49407);
}

TEST(TokenizerCleanTest, HtmlUnescapeMatchesPython) {
  EXPECT_EQ(HtmlUnescape("a &amp; b"), "a & b");
  EXPECT_EQ(HtmlUnescape("&lt;tag&gt;"), "<tag>");
  EXPECT_EQ(HtmlUnescape("&#65;&#x42;&#X43;"), "ABC");
  EXPECT_EQ(HtmlUnescape("&amp"), "&");            // valid without ';'
  EXPECT_EQ(HtmlUnescape("&ampxyz"), "&xyz");      // longest prefix rule
  EXPECT_EQ(HtmlUnescape("&notit;"), "\xc2\xacit;");  // "&not" + "it;"
  EXPECT_EQ(HtmlUnescape("&bogus;"), "&bogus;");
  EXPECT_EQ(HtmlUnescape("&#128;"), "\xe2\x82\xac");  // remapped (Windows-1252 euro)
  EXPECT_EQ(HtmlUnescape("&#0;"), "\xef\xbf\xbd");
  EXPECT_EQ(HtmlUnescape("&#xD800;"), "\xef\xbf\xbd");
  EXPECT_EQ(HtmlUnescape("&#99999999999999999999;"), "\xef\xbf\xbd");
  EXPECT_EQ(HtmlUnescape("&#1;"), "");  // dropped code point
  EXPECT_EQ(HtmlUnescape("& #; &#x;"), "& #; &#x;");
  EXPECT_EQ(HtmlUnescape("&amp;lt;"), "&lt;");  // once
}

TEST(TokenizerCleanTest, CleaningRules) {
  // HTML unescaped twice, like the reference.
  EXPECT_EQ(ClipTokenizer::Clean("&amp;lt;b&amp;gt;"), "<b>");
  // Whitespace runs (including Unicode spaces and the ASCII separators) collapse; ends are stripped.
  EXPECT_EQ(ClipTokenizer::Clean("  a\t\tb \n c\xc2\xa0\xe3\x80\x80" "d\x1c" "e  "), "a b c d e");
  // Unicode lower-case (full case mapping).
  EXPECT_EQ(ClipTokenizer::Clean("ÀÉÎ ΣΑΣ İ"), "àéî σας i̇");
  EXPECT_EQ(ClipTokenizer::Clean("ALL CAPS"), "all caps");
}

TEST(TokenizerCleanTest, PreTokenizerUsesUnicodeClasses) {
  EXPECT_THAT(ClipTokenizer::PreTokenize("don't stop-3.14 日本語 ünï"),
              ElementsAre("don", "'t", "stop", "-", "3", ".", "1", "4", "日本語", "ünï"));
  EXPECT_THAT(ClipTokenizer::PreTokenize("<|startoftext|>hi"), ElementsAre("<|startoftext|>", "hi"));
}

TEST(TokenizerLoadTest, MissingOrBrokenFilesAreClearErrors) {
  EXPECT_EQ(ClipTokenizer::Load("/nonexistent").status().code(), absl::StatusCode::kNotFound);
  testing::TempDir dir;
  testing::WriteFile(dir.File("vocab.json"), "[1,2]");
  testing::WriteFile(dir.File("merges.txt"), "#version: 0.2\na b\n");
  auto s = ClipTokenizer::Load(dir.path()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("vocab.json"));
}

}  // namespace
}  // namespace sd

#include "nodes/text/clip_tokenizer.h"

#include <unicode/locid.h>
#include <unicode/regex.h>
#include <unicode/unistr.h>
#include <unistd.h>

#include <climits>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nodes/base/file_util.h"
#include "nodes/base/install_dirs.h"
#include "nodes/text/html_unescape.h"

#ifndef SD_SOURCE_TOKENIZER_DIR
#define SD_SOURCE_TOKENIZER_DIR ""
#endif

namespace sd {
namespace {

constexpr char kStart[] = "<|startoftext|>";
constexpr char kEnd[] = "<|endoftext|>";

// Python's str.isspace(): Unicode White_Space plus the ASCII separators U+001C..U+001F.
constexpr char kSpaceClass[] = "[\\p{White_Space}\\x{1C}-\\x{1F}]";

std::unique_ptr<icu::RegexPattern> Compile(const std::string& pattern, uint32_t flags) {
  UErrorCode status = U_ZERO_ERROR;
  UParseError pe;
  std::unique_ptr<icu::RegexPattern> p(
      icu::RegexPattern::compile(icu::UnicodeString::fromUTF8(pattern), flags, pe, status));
  if (U_FAILURE(status)) return nullptr;
  return p;
}

const icu::RegexPattern& SpaceRun() {
  static const icu::RegexPattern* p = Compile(absl::StrCat(kSpaceClass, "+"), 0).release();
  return *p;
}

const icu::RegexPattern& PiecePattern() {
  // CLIP's pattern (re.IGNORECASE), \s being Python's Unicode whitespace.
  static const icu::RegexPattern* p =
      Compile(absl::StrCat("<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|"
                           "[^\\p{White_Space}\\x{1C}-\\x{1F}\\p{L}\\p{N}]+"),
              UREGEX_CASE_INSENSITIVE)
          .release();
  return *p;
}

bool IsSpace(UChar32 c) {
  return u_hasBinaryProperty(c, UCHAR_WHITE_SPACE) || (c >= 0x1c && c <= 0x1f);
}

std::string ToUtf8(const icu::UnicodeString& s) {
  std::string out;
  s.toUTF8String(out);
  return out;
}

}  // namespace

std::string ClipTokenizer::DefaultDir() {
  if (const char* env = std::getenv("SDGRAPH_TOKENIZER"); env && *env) return env;
  const std::string installed = FindInstalledDir(DirOfExecutable(), "clip-tokenizer", "vocab.json");
  if (!installed.empty()) return installed;
  return SD_SOURCE_TOKENIZER_DIR;
}

absl::StatusOr<std::unique_ptr<ClipTokenizer>> ClipTokenizer::Load(const std::string& dir) {
  const std::string vocab_path = dir + "/vocab.json";
  const std::string merges_path = dir + "/merges.txt";
  std::ifstream vf(vocab_path);
  if (!vf) return absl::NotFoundError(absl::StrCat("tokenizer: cannot read ", vocab_path));
  nlohmann::json vocab = nlohmann::json::parse(vf, nullptr, /*allow_exceptions=*/false);
  if (vocab.is_discarded() || !vocab.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(vocab_path, ": not a JSON object of token -> id"));
  }
  std::unique_ptr<ClipTokenizer> t(new ClipTokenizer());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0) {
      return absl::InvalidArgumentError(absl::StrCat(vocab_path, ": id of '", it.key(), "' is not a non-negative integer"));
    }
    t->vocab_[it.key()] = it.value().get<int64_t>();
  }
  for (const char* special : {kStart, kEnd}) {
    if (!t->vocab_.count(special)) {
      return absl::InvalidArgumentError(absl::StrCat(vocab_path, ": lacks ", special));
    }
  }
  t->start_id_ = t->vocab_[kStart];
  t->end_id_ = t->vocab_[kEnd];

  // CLIP's bytes_to_unicode: printable Latin-1 bytes map to themselves, the rest to U+0100 onwards.
  int next = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    const UChar32 cp = printable ? b : 256 + next++;
    t->byte_symbol_[b] = ToUtf8(icu::UnicodeString(cp));
    if (!t->vocab_.count(t->byte_symbol_[b])) {
      return absl::InvalidArgumentError(absl::StrCat(vocab_path, ": lacks the byte symbol of ", b));
    }
  }

  std::ifstream mf(merges_path);
  if (!mf) return absl::NotFoundError(absl::StrCat("tokenizer: cannot read ", merges_path));
  std::string line;
  int rank = 0, line_no = 0;
  while (std::getline(mf, line)) {
    ++line_no;
    if (line_no == 1 && line.rfind("#version", 0) == 0) continue;
    if (line.empty()) continue;
    const size_t sp = line.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 == line.size() || line.find(' ', sp + 1) != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(merges_path, ":", line_no, ": not a pair 'a b'"));
    }
    if (!t->vocab_.count(line.substr(0, sp) + line.substr(sp + 1))) {
      return absl::InvalidArgumentError(
          absl::StrCat(merges_path, ":", line_no, ": merge result is not in ", vocab_path));
    }
    t->merge_rank_.emplace(line, rank++);
  }
  if (rank == 0) return absl::InvalidArgumentError(absl::StrCat(merges_path, ": no merges"));
  return t;
}

std::string ClipTokenizer::Clean(absl::string_view text) {
  std::string s = HtmlUnescape(HtmlUnescape(text));
  icu::UnicodeString u = icu::UnicodeString::fromUTF8(icu::StringPiece(s.data(), static_cast<int32_t>(s.size())));
  UErrorCode status = U_ZERO_ERROR;
  std::unique_ptr<icu::RegexMatcher> m(SpaceRun().matcher(u, status));
  icu::UnicodeString collapsed = m->replaceAll(icu::UnicodeString(u' '), status);
  // strip(): only spaces can remain at the ends now.
  int32_t b = 0, e = collapsed.length();
  while (b < e && IsSpace(collapsed.char32At(b))) b = collapsed.moveIndex32(b, 1);
  while (e > b && IsSpace(collapsed.char32At(collapsed.moveIndex32(e, -1)))) e = collapsed.moveIndex32(e, -1);
  icu::UnicodeString trimmed(collapsed, b, e - b);
  trimmed.toLower(icu::Locale::getRoot());
  return ToUtf8(trimmed);
}

std::vector<std::string> ClipTokenizer::PreTokenize(const std::string& cleaned) {
  std::vector<std::string> pieces;
  icu::UnicodeString u = icu::UnicodeString::fromUTF8(cleaned);
  UErrorCode status = U_ZERO_ERROR;
  std::unique_ptr<icu::RegexMatcher> m(PiecePattern().matcher(u, status));
  while (m->find(status) && U_SUCCESS(status)) pieces.push_back(ToUtf8(m->group(status)));
  return pieces;
}

void ClipTokenizer::BpeWord(const std::string& piece, std::vector<int64_t>* out) const {
  if (piece == kStart || piece == kEnd) {
    out->push_back(piece == kStart ? start_id_ : end_id_);
    return;
  }
  std::vector<std::string> word;
  for (unsigned char c : piece) word.push_back(byte_symbol_[c]);
  word.back() += "</w>";
  while (word.size() > 1) {
    int best = INT_MAX;
    size_t best_i = 0;
    for (size_t i = 0; i + 1 < word.size(); ++i) {
      auto it = merge_rank_.find(word[i] + " " + word[i + 1]);
      if (it != merge_rank_.end() && it->second < best) {
        best = it->second;
        best_i = i;
      }
    }
    if (best == INT_MAX) break;
    const std::string first = word[best_i], second = word[best_i + 1];
    std::vector<std::string> merged;
    for (size_t i = 0; i < word.size();) {
      if (i + 1 < word.size() && word[i] == first && word[i + 1] == second) {
        merged.push_back(first + second);
        i += 2;
      } else {
        merged.push_back(word[i++]);
      }
    }
    word = std::move(merged);
  }
  // Every symbol is in the vocabulary: byte symbols and merge results were checked at load.
  for (const std::string& sym : word) {
    auto it = vocab_.find(sym);
    out->push_back(it != vocab_.end() ? it->second : end_id_);
  }
}

std::vector<int64_t> ClipTokenizer::Bpe(const std::string& cleaned) const {
  std::vector<int64_t> ids;
  for (const std::string& piece : PreTokenize(cleaned)) BpeWord(piece, &ids);
  return ids;
}

Tokenized ClipTokenizer::Encode(absl::string_view text, int context_length) const {
  std::vector<int64_t> bpe = Bpe(Clean(text));
  Tokenized out;
  out.prompt_tokens = static_cast<int>(bpe.size());
  const int room = std::max(0, context_length - 2);
  out.truncated = std::max(0, out.prompt_tokens - room);
  out.ids.reserve(context_length);
  out.ids.push_back(start_id_);
  for (int i = 0; i < out.prompt_tokens - out.truncated; ++i) out.ids.push_back(bpe[i]);
  out.ids.push_back(end_id_);
  while (static_cast<int>(out.ids.size()) < context_length) out.ids.push_back(end_id_);
  return out;
}

}  // namespace sd

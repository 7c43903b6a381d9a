#include "nodes/text/prompt_parser.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace sd {
namespace {

constexpr double kRound = 1.1, kSquare = 1 / 1.1;
// Brackets nest at most this deep (deeper ones are text): bounds the work and the recursion a
// hostile prompt can cause.
constexpr int kMaxNesting = 64;

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
// Python's \w for our purposes: ASCII letters, digits, '_' and every non-ASCII byte (letters of
// other scripts), so "BREAKfast" and "éBREAK" are not BREAKs.
bool IsWordChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' ||
         static_cast<unsigned char>(c) >= 0x80;
}

// A finite number, possibly surrounded by whitespace ("1.3", " .5 ", "-2"); nullopt otherwise.
std::optional<double> ParseWeight(absl::string_view text) {
  const std::string s(absl::StripAsciiWhitespace(text));
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size() || !std::isfinite(v)) return std::nullopt;
  return v;
}

// Appends `text` split at each BREAK (a word of its own, with the whitespace around it).
void AppendSplitAtBreaks(absl::string_view text, double weight, std::vector<PromptSpan>& out) {
  size_t start = 0, from = 0;
  for (;;) {
    const size_t at = text.find("BREAK", from);
    if (at == absl::string_view::npos) break;
    const size_t after = at + 5;
    const bool bounded = (at == 0 || !IsWordChar(text[at - 1])) &&
                         (after == text.size() || !IsWordChar(text[after]));
    if (!bounded) {
      from = at + 1;
      continue;
    }
    size_t left = at, right = after;
    while (left > start && IsSpace(text[left - 1])) --left;
    while (right < text.size() && IsSpace(text[right])) ++right;
    out.push_back({std::string(text.substr(start, left - start)), weight, false});
    out.push_back({"", weight, true});
    start = from = right;
  }
  out.push_back({std::string(text.substr(start)), weight, false});
}

// Drops empty text, merges neighbours of equal weight; an empty result is one empty span.
std::vector<PromptSpan> Tidy(std::vector<PromptSpan> spans) {
  std::vector<PromptSpan> out;
  for (PromptSpan& s : spans) {
    if (!s.is_break && s.text.empty()) continue;
    if (s.is_break) s.weight = 1.0;
    if (!s.is_break && !out.empty() && !out.back().is_break && out.back().weight == s.weight) {
      out.back().text += s.text;
    } else {
      out.push_back(std::move(s));
    }
  }
  if (out.empty()) out.push_back({"", 1.0, false});
  return out;
}

// AUTOMATIC1111: spans start at weight 1; closing a bracket multiplies every span since it opened.
std::vector<PromptSpan> ParseA1111(absl::string_view p) {
  std::vector<PromptSpan> res;
  std::vector<size_t> round, square;
  int round_too_deep = 0, square_too_deep = 0;
  auto multiply_from = [&](size_t start, double m) {
    for (size_t i = start; i < res.size(); ++i) res[i].weight *= m;
  };
  auto text = [&](absl::string_view t) { AppendSplitAtBreaks(t, 1.0, res); };
  size_t i = 0;
  while (i < p.size()) {
    const char c = p[i];
    if (c == '\\') {
      const bool escape =
          i + 1 < p.size() && absl::string_view("()[]\\").find(p[i + 1]) != absl::string_view::npos;
      res.push_back({std::string(1, escape ? p[i + 1] : '\\'), 1.0, false});
      i += escape ? 2 : 1;
    } else if ((c == '(' || c == '[') &&
               round.size() + square.size() >= static_cast<size_t>(kMaxNesting)) {
      text(p.substr(i, 1)), ++i;  // nested too deep: text, and so is the closer that would match it
      ++(c == '(' ? round_too_deep : square_too_deep);
    } else if (c == '(') {
      round.push_back(res.size()), ++i;
    } else if (c == '[') {
      square.push_back(res.size()), ++i;
    } else if ((c == ')' && round_too_deep > 0) || (c == ']' && square_too_deep > 0)) {
      text(p.substr(i, 1)), ++i;
      --(c == ')' ? round_too_deep : square_too_deep);
    } else if (c == ')' || c == ']') {
      std::vector<size_t>& open = c == ')' ? round : square;
      if (open.empty()) {
        text(p.substr(i, 1));
      } else {
        multiply_from(open.back(), c == ')' ? kRound : kSquare);
        open.pop_back();
      }
      ++i;
    } else if (c == ':') {
      // `:number)` closes the innermost round bracket with that weight.
      size_t j = i + 1;
      while (j < p.size() &&
             (absl::ascii_isdigit(static_cast<unsigned char>(p[j])) ||
              absl::string_view("+-. \t\n\r\f\v").find(p[j]) != absl::string_view::npos)) {
        ++j;
      }
      std::optional<double> w;
      if (j < p.size() && p[j] == ')') w = ParseWeight(p.substr(i + 1, j - i - 1));
      if (w && round_too_deep == 0 && !round.empty()) {
        multiply_from(round.back(), *w);
        round.pop_back();
        i = j + 1;
      } else if (w) {
        text(p.substr(i, j + 1 - i));  // ":1.3)" with no bracket to close: literal text
        if (round_too_deep > 0) --round_too_deep;
        i = j + 1;
      } else {
        text(":"), ++i;
      }
    } else {
      size_t j = i;
      while (j < p.size() && absl::string_view("\\()[]:").find(p[j]) == absl::string_view::npos)
        ++j;
      text(p.substr(i, j - i));
      i = j;
    }
  }
  for (size_t start : round) multiply_from(start, kRound);
  for (size_t start : square) multiply_from(start, kSquare);
  return res;
}

// ComfyUI: groups nest; a group's weight is its parent's x1.1, or the number after its last colon.
// A character is a bracket only when `bracket` says so (escaped ones are text).
struct Sym {
  char c;
  bool bracket;
};
using Syms = std::vector<Sym>;

void ComfyWeights(const Syms& s, double weight, std::vector<PromptSpan>& out) {
  auto flush_text = [&](const Syms& t, double w) {
    std::string text;
    for (const Sym& x : t) text += x.c;
    AppendSplitAtBreaks(text, w, out);
  };
  size_t i = 0;
  while (i < s.size()) {
    if (!(s[i].bracket && s[i].c == '(')) {
      size_t j = i;
      while (j < s.size() && !(s[j].bracket && s[j].c == '(')) ++j;
      flush_text(Syms(s.begin() + i, s.begin() + j), weight);
      i = j;
      continue;
    }
    // The group from s[i] to its matching ')' (brackets are balanced by now).
    size_t j = i + 1;
    for (int depth = 1; depth > 0; ++j) {
      if (s[j].bracket) depth += s[j].c == '(' ? 1 : -1;
    }
    Syms inner(s.begin() + i + 1, s.begin() + j - 1);
    double w = weight * kRound;
    size_t colon = inner.size();
    for (size_t k = inner.size(); k-- > 0;) {
      if (inner[k].c == ':') {
        colon = k;
        break;
      }
    }
    if (colon > 0 && colon < inner.size()) {
      std::string number;
      bool plain = true;
      for (size_t k = colon + 1; k < inner.size(); ++k) {
        number += inner[k].c;
        plain = plain && !inner[k].bracket;
      }
      if (std::optional<double> explicit_w = plain ? ParseWeight(number) : std::nullopt) {
        w = *explicit_w;
        inner.resize(colon);
      }
    }
    ComfyWeights(inner, w, out);
    i = j;
  }
}

std::vector<PromptSpan> ParseComfy(absl::string_view p) {
  Syms syms;
  int depth = 0,
      too_deep = 0;  // brackets nested deeper than kMaxNesting are text, with their closers
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == '\\' && i + 1 < p.size() && (p[i + 1] == '(' || p[i + 1] == ')')) {
      syms.push_back({p[++i], false});
    } else if (p[i] == '(') {
      const bool bracket = depth < kMaxNesting;
      syms.push_back({'(', bracket});
      ++(bracket ? depth : too_deep);
    } else if (p[i] == ')') {
      const bool bracket = too_deep == 0 && depth > 0;  // closing nothing: text
      syms.push_back({')', bracket});
      if (too_deep > 0) {
        --too_deep;
      } else if (depth > 0) {
        --depth;
      }
    } else {
      syms.push_back({p[i], false});
    }
  }
  for (; depth > 0; --depth) syms.push_back({')', true});
  std::vector<PromptSpan> res;
  ComfyWeights(syms, 1.0, res);
  return res;
}

}  // namespace

absl::StatusOr<PromptWeighting> ParsePromptWeighting(absl::string_view name) {
  const std::string n = absl::AsciiStrToLower(name);
  if (n.empty() || n == "a1111") return PromptWeighting::kA1111;
  if (n == "comfy") return PromptWeighting::kComfy;
  if (n == "none") return PromptWeighting::kNone;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown prompt weighting '", name, "' (a1111, comfy or none)"));
}

const char* PromptWeightingName(PromptWeighting mode) {
  switch (mode) {
    case PromptWeighting::kA1111:
      return "a1111";
    case PromptWeighting::kComfy:
      return "comfy";
    case PromptWeighting::kNone:
      return "none";
  }
  return "a1111";
}

std::vector<PromptSpan> ParsePrompt(absl::string_view prompt, PromptWeighting mode) {
  std::vector<PromptSpan> spans;
  switch (mode) {
    case PromptWeighting::kA1111:
      spans = ParseA1111(prompt);
      break;
    case PromptWeighting::kComfy:
      spans = ParseComfy(prompt);
      break;
    case PromptWeighting::kNone:
      AppendSplitAtBreaks(prompt, 1.0, spans);
      break;
  }
  return Tidy(std::move(spans));
}

absl::StatusOr<std::string> StripLoraTags(absl::string_view prompt, std::vector<LoraTag>* tags) {
  std::string out;
  size_t from = 0;
  for (;;) {
    const size_t at = prompt.find("<lora:", from);
    const size_t end = at == absl::string_view::npos ? at : prompt.find('>', at);
    if (end == absl::string_view::npos) break;
    absl::StrAppend(&out, prompt.substr(from, at - from));
    const std::string body(prompt.substr(at + 6, end - at - 6));
    std::vector<std::string> fields = absl::StrSplit(body, ':');
    LoraTag tag;
    tag.name = std::string(absl::StripAsciiWhitespace(fields[0]));
    bool unet_given = false;
    std::vector<double> positional;
    for (size_t i = 1; i < fields.size(); ++i) {
      std::string field(absl::StripAsciiWhitespace(fields[i]));
      const size_t eq = field.find('=');
      const std::string key = eq == std::string::npos ? "" : field.substr(0, eq);
      std::optional<double> v = ParseWeight(eq == std::string::npos ? field : field.substr(eq + 1));
      if (!v || (!key.empty() && key != "te" && key != "unet")) {
        return absl::InvalidArgumentError(
            absl::StrCat("prompt tag <lora:", body, ">: '", field,
                         "' is not a strength (a number, te=N or unet=N)"));
      }
      if (key == "te") tag.text = *v;
      if (key == "unet") tag.unet = *v, unet_given = true;
      if (key.empty()) positional.push_back(*v);
    }
    if (!positional.empty()) tag.text = positional[0];
    if (positional.size() > 1) tag.unet = positional[1], unet_given = true;
    if (!unet_given) tag.unet = tag.text;
    if (tag.name.empty())
      return absl::InvalidArgumentError(absl::StrCat("prompt tag <lora:", body, "> names no LoRA"));
    if (tags) tags->push_back(tag);
    from = end + 1;
  }
  absl::StrAppend(&out, prompt.substr(from));
  return out;
}

std::string ComfyEmbeddingWords(absl::string_view prompt) {
  static constexpr absl::string_view kPrefix = "embedding:";
  std::string out;
  size_t i = 0;
  while (i < prompt.size()) {
    const size_t at = prompt.find(kPrefix, i);
    const bool word_start = at != absl::string_view::npos &&
                            (at == 0 || std::isspace(static_cast<unsigned char>(prompt[at - 1])) ||
                             prompt[at - 1] == ',' || prompt[at - 1] == '(');
    if (at == absl::string_view::npos) {
      absl::StrAppend(&out, prompt.substr(i));
      break;
    }
    absl::StrAppend(&out, prompt.substr(i, at - i));
    if (!word_start) {
      absl::StrAppend(&out, kPrefix);
      i = at + kPrefix.size();
      continue;
    }
    size_t end = at + kPrefix.size();
    while (end < prompt.size() && !std::isspace(static_cast<unsigned char>(prompt[end])) &&
           prompt[end] != ',' && prompt[end] != ')' && prompt[end] != ':') {
      ++end;
    }
    absl::string_view name = prompt.substr(at + kPrefix.size(), end - at - kPrefix.size());
    for (absl::string_view ext : {".safetensors", ".pt", ".bin"}) {
      if (name.size() > ext.size() && name.substr(name.size() - ext.size()) == ext)
        name.remove_suffix(ext.size());
    }
    absl::StrAppend(&out, name);
    i = end;
  }
  return out;
}

}  // namespace sd

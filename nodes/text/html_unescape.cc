#include "nodes/text/html_unescape.h"

#include <unordered_map>
#include <unordered_set>

namespace sd {
namespace {

struct Tables {
  std::unordered_map<std::string, std::string> named;
  std::unordered_map<uint32_t, std::string> remapped;
  std::unordered_set<uint32_t> dropped;
};

const Tables& GetTables() {
  static const Tables* t = [] {
    auto* t = new Tables();
#define SD_HTML_ENTITY(name, value) t->named.emplace(name, value);
#define SD_HTML_REMAPPED_CHARREF(num, value) t->remapped.emplace(num, value);
#define SD_HTML_DROPPED_CODEPOINT(num) t->dropped.insert(num);
#include "nodes/text/html_entities.inc"
#undef SD_HTML_ENTITY
#undef SD_HTML_REMAPPED_CHARREF
#undef SD_HTML_DROPPED_CODEPOINT
    return t;
  }();
  return *t;
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xe0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    out->push_back(static_cast<char>(0xf0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
}

bool IsDigit(char c, bool hex) {
  return (c >= '0' && c <= '9') || (hex && ((c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')));
}

// Python: &(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)
// Returns the length consumed after '&' (0: no reference here) and appends the replacement.
size_t Replace(absl::string_view s, std::string* out) {
  const Tables& t = GetTables();
  if (!s.empty() && s[0] == '#') {
    const bool hex = s.size() > 1 && (s[1] == 'x' || s[1] == 'X');
    size_t i = hex ? 2 : 1;
    const size_t start = i;
    uint64_t num = 0;
    while (i < s.size() && IsDigit(s[i], hex)) {
      const char c = s[i];
      const uint64_t d = c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
      num = std::min<uint64_t>(num * (hex ? 16 : 10) + d, 0x7fffffffull);  // saturate: > 0x10ffff anyway
      ++i;
    }
    if (i == start) return 0;
    if (i < s.size() && s[i] == ';') ++i;
    const uint32_t cp = static_cast<uint32_t>(num);
    if (auto it = t.remapped.find(cp); it != t.remapped.end()) {
      out->append(it->second);
    } else if ((cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) {
      out->append("\xef\xbf\xbd");
    } else if (!t.dropped.count(cp)) {
      AppendUtf8(cp, out);
    }
    return i;
  }
  size_t n = 0;
  while (n < s.size() && n < 32) {
    const char c = s[n];
    if (c == '\t' || c == '\n' || c == '\f' || c == ' ' || c == '<' || c == '&' || c == '#' || c == ';') break;
    ++n;
  }
  if (n == 0) return 0;
  const size_t len = (n < s.size() && s[n] == ';') ? n + 1 : n;
  const std::string name(s.substr(0, len));
  if (auto it = t.named.find(name); it != t.named.end()) {
    out->append(it->second);
    return len;
  }
  // The longest prefix (at least 2 characters) that is a reference valid without ';'.
  for (size_t x = len - 1; x > 1; --x) {
    if (auto it = t.named.find(name.substr(0, x)); it != t.named.end()) {
      out->append(it->second);
      out->append(name.substr(x));
      return len;
    }
  }
  out->push_back('&');
  out->append(name);
  return len;
}

}  // namespace

std::string HtmlUnescape(absl::string_view text) {
  if (text.find('&') == absl::string_view::npos) return std::string(text);
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] != '&') {
      out.push_back(text[i++]);
      continue;
    }
    const size_t used = Replace(text.substr(i + 1), &out);
    if (used == 0) {
      out.push_back('&');
      ++i;
    } else {
      i += 1 + used;
    }
  }
  return out;
}

}  // namespace sd

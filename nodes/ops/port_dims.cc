#include "nodes/ops/port_dims.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "nodes/base/checked_math.h"

namespace sd {
namespace {

constexpr int64_t kMaxFactor = int64_t{1} << 31;
constexpr uint64_t kMaxSize = uint64_t{1} << 62;

bool IsSymbol(const std::string& s) {
  if (s.empty() || !(absl::ascii_isalpha(s[0]) || s[0] == '_')) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return absl::ascii_isalnum(c) || c == '_'; });
}

absl::StatusOr<DimExpr> ParseDim(const std::string& text, const std::string& all) {
  DimExpr d;
  if (text == "?") {
    d.any = true;
    return d;
  }
  for (absl::string_view piece : absl::StrSplit(text, '*')) {
    const std::string f(piece);
    int64_t n = 0;
    if (IsSymbol(f)) {
      d.symbols.push_back(f);
    } else if (absl::SimpleAtoi(f, &n) && n >= 1 && n <= kMaxFactor &&
               CheckedMul(static_cast<uint64_t>(d.factor), static_cast<uint64_t>(n))
                       .value_or(kMaxSize) < static_cast<uint64_t>(kMaxFactor)) {
      d.factor *= n;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "dims '", all, "': '", f, "' is neither a number from 1 to 2^31 nor a symbol"));
    }
  }
  return d;
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace

absl::StatusOr<std::vector<DimExpr>> ParseDims(const std::string& text) {
  std::vector<DimExpr> dims;
  for (absl::string_view axis : absl::StrSplit(text, ',')) {
    const std::string trimmed(absl::StripAsciiWhitespace(axis));
    auto d = ParseDim(trimmed, text);
    if (!d.ok()) return d.status();
    dims.push_back(std::move(*d));
  }
  return dims;
}

std::string DescribeDim(const DimExpr& d) {
  if (d.any) return "?";
  std::vector<std::string> parts;
  if (d.factor != 1 || d.symbols.empty()) parts.push_back(absl::StrCat(d.factor));
  parts.insert(parts.end(), d.symbols.begin(), d.symbols.end());
  return absl::StrJoin(parts, "*");
}

absl::Status DimSolver::Add(const std::string& who, const std::string& dims,
                            const std::vector<int64_t>& shape) {
  auto parsed = ParseDims(dims);
  if (!parsed.ok())
    return absl::InvalidArgumentError(absl::StrCat(who, ": ", parsed.status().message()));
  if (parsed->size() != shape.size()) {
    return absl::InvalidArgumentError(absl::StrCat(who, " ", ShapeText(shape), ": expected ",
                                                   parsed->size(), " axes (", dims, ")"));
  }
  for (size_t i = 0; i < shape.size(); ++i) {
    if ((*parsed)[i].any) continue;
    if (shape[i] < 0 || static_cast<uint64_t>(shape[i]) > kMaxSize) {
      return absl::InvalidArgumentError(
          absl::StrCat(who, " ", ShapeText(shape), ": axis ", i, " is out of range"));
    }
    pending_.push_back({who, ShapeText(shape), i, std::move((*parsed)[i]), shape[i]});
  }
  return absl::OkStatus();
}

absl::Status DimSolver::Step(const Pending& p, bool& done) {
  uint64_t known = static_cast<uint64_t>(p.expr.factor);
  std::vector<std::string> unknown;
  std::vector<std::string> values;
  size_t bound_occurrences = 0;
  for (const std::string& s : p.expr.symbols) {
    auto it = bound_.find(s);
    if (it == bound_.end()) {
      if (std::find(unknown.begin(), unknown.end(), s) == unknown.end()) unknown.push_back(s);
      continue;
    }
    const std::string value = absl::StrCat(s, "=", it->second);
    if (std::find(values.begin(), values.end(), value) == values.end()) values.push_back(value);
    ++bound_occurrences;
    known = CheckedMul(known, static_cast<uint64_t>(it->second)).value_or(kMaxSize + 1);
  }
  const uint64_t size = static_cast<uint64_t>(p.size);
  const std::string where = absl::StrCat(p.who, " ", p.shape, ": axis ", p.axis, " is ", p.size);
  const std::string expr = DescribeDim(p.expr);
  const size_t repeats = p.expr.symbols.size() - bound_occurrences;
  done = unknown.empty() || (unknown.size() == 1 && repeats == 1);
  if (!done) return absl::OkStatus();
  const bool compound = p.expr.symbols.size() + (p.expr.factor != 1 ? 1 : 0) > 1;
  const std::string detail =
      compound && !values.empty() ? absl::StrCat(" (", absl::StrJoin(values, ", "), ")") : "";
  if (unknown.empty()) {
    if (known == size) return absl::OkStatus();
    if (known > kMaxSize)
      return absl::InvalidArgumentError(
          absl::StrCat(where, ", expected ", expr, detail, ", too large"));
    if (p.expr.symbols.empty())
      return absl::InvalidArgumentError(absl::StrCat(where, ", expected ", known));
    return absl::InvalidArgumentError(
        absl::StrCat(where, ", expected ", expr, " = ", known, detail));
  }
  if (known == 0 && size == 0) return absl::OkStatus();  // 0 = 0 * anything: nothing to bind
  if (known > kMaxSize || known == 0 || size % known != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ", expected ", expr, ": not a multiple of ", known, detail));
  }
  bound_[unknown[0]] = static_cast<int64_t>(size / known);
  return absl::OkStatus();
}

absl::Status DimSolver::Solve() {
  bool progress = true;
  while (progress) {
    progress = false;
    for (size_t i = 0; i < pending_.size();) {
      bool done = false;
      if (absl::Status s = Step(pending_[i], done); !s.ok()) return s;
      if (done) {
        pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i));
        progress = true;
      } else {
        ++i;
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace sd

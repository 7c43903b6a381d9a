// Status propagation helpers. Debian's Abseil (20220623) predates absl's own macros, so the project
// has these two, used everywhere instead of hand-written `if (!s.ok()) return s;`.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define SD_STATUS_CONCAT_INNER_(a, b) a##b
#define SD_STATUS_CONCAT_(a, b) SD_STATUS_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status); returns it from the enclosing function if it is not OK.
#define SD_RETURN_IF_ERROR(expr)                                   \
  do {                                                             \
    ::absl::Status sd_status_ = (expr);                            \
    if (!sd_status_.ok()) return sd_status_;                       \
  } while (0)

// `SD_ASSIGN_OR_RETURN(auto x, MakeX());` declares/assigns from a StatusOr or returns its error.
#define SD_ASSIGN_OR_RETURN(lhs, rexpr) \
  SD_ASSIGN_OR_RETURN_IMPL_(SD_STATUS_CONCAT_(sd_statusor_, __LINE__), lhs, rexpr)

#define SD_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                              \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()
